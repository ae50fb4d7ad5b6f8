"""paho's socket on the asyncio loop: the adapter that replaces aiomqtt for us.

paho supports external event loops through socket callbacks (`on_socket_open`,
`on_socket_register_write`...) and `loop_read/loop_write`; `LoopSocket` registers the socket
with asyncio's reader and writer callbacks and turns every failure into one `on_failure`
call, so nothing paho raises reaches the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

_FINE = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN)


class LoopSocket:
    """Drives one paho client's socket from `loop`; `last_rx` is when bytes last came."""

    def __init__(
        self,
        client: mqtt.Client,
        loop: asyncio.AbstractEventLoop,
        *,
        on_failure: Callable[[str], None],
        abandoned: Callable[[], bool],
    ) -> None:
        self.client = client
        self.loop = loop
        self.on_failure = on_failure
        self.abandoned = abandoned
        self.loop_thread = threading.get_ident()
        self.sock: Any = None
        self.fd = -1
        self.last_rx = time.monotonic()
        client.on_socket_open = self._threadsafe(self._open)
        client.on_socket_close = self._threadsafe(self._closed)
        client.on_socket_register_write = self._threadsafe(self._register_write)
        client.on_socket_unregister_write = self._threadsafe(self._unregister_write)

    def _threadsafe(self, func: Callable[[Any, Any, Any], None]) -> Callable[[Any, Any, Any], None]:
        # connect() runs in a worker thread (DNS, TCP and the TLS handshake block), so the
        # socket callbacks it triggers are handed to the loop thread.
        def call(client: Any, userdata: Any, sock: Any) -> None:
            if threading.get_ident() == self.loop_thread:
                func(client, userdata, sock)
            else:
                try:
                    self.loop.call_soon_threadsafe(func, client, userdata, sock)
                except RuntimeError:
                    # A client collected (paho's __del__ closes its socket) by the garbage
                    # collector on some other thread after its loop closed: nobody to tell.
                    if not self.loop.is_closed():
                        raise

        return call

    def _open(self, client: Any, userdata: Any, sock: Any) -> None:
        if self.abandoned():
            # connect() finished in its thread after we gave up on it (timeout, cancel)
            with contextlib.suppress(OSError):
                sock.close()
            return
        self.sock = sock
        self.fd = sock.fileno()
        self.loop.add_reader(self.fd, self._readable)

    def forget(self) -> Any:
        """Stop watching the socket; returns it (or None) for the caller to close."""
        sock = self.sock
        # By fd: paho may have closed the socket object already (fileno() is then -1).
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            self.loop.remove_writer(self.fd)
        self.fd = -1
        self.sock = None
        return sock

    def close(self) -> None:
        sock = self.forget()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _closed(self, client: Any, userdata: Any, sock: Any) -> None:
        if sock is self.sock:
            self.forget()

    def _register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if sock is self.sock and self.fd >= 0:
            self.loop.add_writer(self.fd, self._writable)

    def _unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if sock is self.sock and self.fd >= 0:
            self.loop.remove_writer(self.fd)

    def _readable(self) -> None:
        self.last_rx = time.monotonic()
        try:
            rc = self.client.loop_read(max_packets=64)
        except Exception as exc:
            # A packet paho cannot parse (bad UTF-8 in a property, a malformed length): the
            # stream is out of step, so the link is done; nothing from the wire raises on.
            self.on_failure(f"malformed packet from the broker: {exc!r}")
            return
        if rc not in _FINE:
            self.on_failure(f"read failed: {mqtt.error_string(rc)}")

    def _writable(self) -> None:
        rc = self.client.loop_write()
        if rc not in _FINE:
            self.on_failure(f"write failed: {mqtt.error_string(rc)}")
