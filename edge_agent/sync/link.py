"""One MQTT connection driven by the asyncio loop: paho's client under our own adapter.

Why not aiomqtt: its cost per publish grows with the number of pending publishes and it
wraps every publish in a future and a task; measured on loopback it drains at about a third
of paho's rate. paho exposes socket callbacks for an external event loop, so we register the
socket with asyncio ourselves and keep paho's packet code (the pattern of aiomqtt itself,
without the per-publish overhead). Every connection gets a fresh paho client: the outbox,
not paho's memory, is our session state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.errors import SyncError

log = logging.getLogger(__name__)

AckCallback = Callable[[int, bool], None]


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class LinkOptions:
    """Everything one connection attempt needs; TLS files are read at every attempt."""

    host: str
    port: int
    client_id: str
    protocol: str = "5"
    keepalive_s: int = 30
    session_expiry_s: int = 86400
    connect_timeout_s: float = 10.0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    max_inflight: int = 20
    # Received QoS 1 messages are acknowledged only by `Link.ack()` (after the receiver has
    # committed them), not by paho when the callback returns.
    manual_ack: bool = False
    # MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may send us
    # at once (None: the protocol's 65535); bounds what a manual-ack receiver holds in memory.
    receive_maximum: int | None = None


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: dict[str, str] = field(default_factory=dict)
    mid: int = 0


def tls_context(options: LinkOptions) -> ssl.SSLContext:
    """A fresh context: certificate files are read now, so rotated files are picked up."""
    try:
        context = ssl.create_default_context(
            cafile=str(options.ca_file) if options.ca_file else None
        )
        if options.cert_file is not None and options.key_file is not None:
            context.load_cert_chain(str(options.cert_file), str(options.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise SyncError(f"cannot load TLS files for the broker link: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _properties(packet_type: int) -> Any:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def _reason_failed(reason: Any) -> bool:
    return isinstance(reason, ReasonCode) and reason.is_failure


class Link:
    """A connected MQTT client. `closed` resolves with the reason once the link is gone."""

    def __init__(
        self,
        options: LinkOptions,
        *,
        will: Will | None = None,
        on_message: Callable[[Message], None] | None = None,
        on_ack: AckCallback | None = None,
    ) -> None:
        self.options = options
        self.will = will
        self._on_message = on_message
        self._on_ack = on_ack
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._subacks: dict[int, asyncio.Future[None]] = {}
        self._sock: Any = None
        self._fd = -1
        self._last_error = ""
        self._misc: asyncio.Task[None] | None = None
        self._last_rx = time.monotonic()
        self.pending = 0
        self.v5 = options.protocol == "5"
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        o = self.options
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=o.client_id,
            clean_session=None if self.v5 else False,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            manual_ack=o.manual_ack,
        )
        # paho's own log lines go to DEBUG (a retrying link must not spam); its last error is
        # kept because TLS 1.3 reports a refused client certificate only there.
        client.on_log = self._handle_log
        client.max_inflight_messages_set(max(o.max_inflight, 1) + 16)
        client.max_queued_messages_set(0)
        client.connect_timeout = o.connect_timeout_s
        if o.username is not None:
            client.username_pw_set(o.username, o.password)
        if o.tls:
            client.tls_set_context(tls_context(o))
        if self.will is not None:
            client.will_set(self.will.topic, self.will.payload, self.will.qos, self.will.retain)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        client.on_socket_open = self._threadsafe(self._socket_open)
        client.on_socket_close = self._threadsafe(self._socket_close)
        client.on_socket_register_write = self._threadsafe(self._register_write)
        client.on_socket_unregister_write = self._threadsafe(self._unregister_write)
        return client

    def _threadsafe(self, func: Callable[[Any, Any, Any], None]) -> Callable[[Any, Any, Any], None]:
        # connect() runs in a worker thread (DNS, TCP and the TLS handshake block), so the
        # socket callbacks it triggers are handed to the loop thread.
        def call(client: Any, userdata: Any, sock: Any) -> None:
            if threading.get_ident() == self._loop_thread:
                func(client, userdata, sock)
            else:
                try:
                    self._loop.call_soon_threadsafe(func, client, userdata, sock)
                except RuntimeError:
                    # A client collected (paho's __del__ closes its socket) by the garbage
                    # collector on some other thread after its loop closed: nobody to tell.
                    if not self._loop.is_closed():
                        raise

        return call

    # -- socket plumbing --------------------------------------------------------------

    def _socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        if self.closed.done():
            # connect() finished in its thread after we gave up on it (timeout, cancel)
            with contextlib.suppress(OSError):
                sock.close()
            return
        self._sock = sock
        self._fd = sock.fileno()
        self._loop.add_reader(self._fd, self._readable)

    def _forget_socket(self) -> None:
        # By fd: paho may have closed the socket object already (fileno() is then -1).
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = -1
        self._sock = None

    def _socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        if sock is self._sock:
            self._forget_socket()

    def _register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if sock is self._sock and self._fd >= 0:
            self._loop.add_writer(self._fd, self._writable)

    def _unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if sock is self._sock and self._fd >= 0:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        self._last_rx = time.monotonic()
        rc = self._client.loop_read(max_packets=64)
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._close(f"read failed: {mqtt.error_string(rc)}")

    def _writable(self) -> None:
        rc = self._client.loop_write()
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._close(f"write failed: {mqtt.error_string(rc)}")

    async def _housekeeping(self) -> None:
        period = max(0.25, self.options.keepalive_s / 10)
        dead_after = 1.5 * self.options.keepalive_s
        while not self.closed.done():
            await asyncio.sleep(period)
            self._client.loop_misc()
            silent = time.monotonic() - self._last_rx
            if silent > dead_after and not self.closed.done():
                self._close(f"no packet from the broker for {silent:.0f} s (dead link)")

    # -- paho callbacks (all on the loop thread once connected) -------------------------

    def _handle_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self._connected.done():
            return
        if _reason_failed(reason):
            self._connected.set_exception(SyncError(f"broker refused the connection: {reason}"))
        else:
            # paho formats a log line per packet while a log callback is set; once the
            # handshake is done the per-packet cost is not worth it (a tenth of the rate).
            if not log.isEnabledFor(logging.DEBUG):
                client.on_log = None
            self._connected.set_result(None)

    def _handle_log(self, client: Any, userdata: Any, level: int, text: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._last_error = text
        log.debug("paho: %s", text)

    def _handle_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        detail = f" ({self._last_error})" if self._last_error else ""
        self._close(f"disconnected: {reason}{detail}")

    def _handle_publish(
        self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        ok = not _reason_failed(reason)
        self.pending -= 1
        waiter = self._waiters.pop(mid, None)
        if waiter is not None:
            if not waiter.done():
                if ok:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(SyncError(f"broker rejected publish: {reason}"))
        elif self._on_ack is not None:
            self._on_ack(mid, ok)

    def _handle_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._on_message is None:
            return
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        user = dict(getattr(props, "UserProperty", []) or []) if props else {}
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")
        self._on_message(
            Message(
                topic=topic,
                payload=bytes(msg.payload),
                retain=bool(msg.retain),
                qos=msg.qos,
                response_topic=response_topic,
                correlation_data=correlation,
                user_properties=user,
                mid=int(msg.mid),
            )
        )

    def _handle_subscribe(
        self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        waiter = self._subacks.pop(mid, None)
        if waiter is None or waiter.done():
            return
        refused = [r for r in reasons or [] if _reason_failed(r)]
        if refused:
            waiter.set_exception(SyncError(f"broker refused the subscription: {refused[0]}"))
        else:
            waiter.set_result(None)

    # -- public API ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection and wait for CONNACK; raises `SyncError` with the reason."""
        o = self.options
        properties = None
        if self.v5:
            properties = _properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = o.session_expiry_s
            if o.receive_maximum is not None:
                properties.ReceiveMaximum = o.receive_maximum
        try:
            async with asyncio.timeout(o.connect_timeout_s):
                rc = await asyncio.to_thread(
                    self._client.connect,
                    o.host,
                    o.port,
                    keepalive=o.keepalive_s,
                    clean_start=False if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                    properties=properties,
                )
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise SyncError(f"cannot connect to {o.host}:{o.port}: {rc}")
                self._last_rx = time.monotonic()
                self._misc = asyncio.create_task(self._housekeeping(), name="mqtt-housekeeping")
                await _first(self._connected, self.closed)
        except TimeoutError:
            self._close("connect timed out")
            raise SyncError(
                f"no CONNACK from {o.host}:{o.port} within {o.connect_timeout_s:.0f} s"
            ) from None
        except ssl.SSLError as exc:
            self._close("TLS failed")
            raise SyncError(f"TLS handshake with {o.host}:{o.port} failed: {exc}") from exc
        except OSError as exc:
            self._close("connect failed")
            raise SyncError(f"cannot connect to {o.host}:{o.port}: {exc}") from exc
        except BaseException:
            self._close("connect abandoned")
            raise
        if self.closed.done() and not self._connected.done():
            raise SyncError(f"connection to {o.host}:{o.port} closed: {self.closed.result()}")
        if self._connected.exception() is not None:
            self._close("refused by the broker")
        self._connected.result()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        content_type: str | None = None,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
    ) -> int:
        """Queue one publish and return its message id; its PUBACK calls `on_ack(mid, ok)`."""
        if self.closed.done():
            raise SyncError(f"link is down: {self.closed.result()}")
        properties = None
        if self.v5 and (content_type or correlation_data or response_topic):
            properties = _properties(PacketTypes.PUBLISH)
            if response_topic:
                properties.ResponseTopic = response_topic
            if content_type:
                properties.ContentType = content_type
            if correlation_data:
                properties.CorrelationData = correlation_data
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        # Every return code is checked: MQTT_ERR_QUEUE_SIZE (ids exhausted) would otherwise
        # lose the message silently.
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SyncError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        if qos > 0:
            self.pending += 1
        return int(info.mid)

    async def publish_wait(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        """Publish and wait for the PUBACK (or the link's end)."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        mid = self.publish(topic, payload, **kwargs)
        if kwargs.get("qos", 1) == 0:
            return
        self._waiters[mid] = waiter
        await _first(waiter, self.closed)
        if not waiter.done():
            raise SyncError(f"link lost before PUBACK on {topic}: {self.closed.result()}")
        waiter.result()

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe and wait for the SUBACK; raises `SyncError` when the broker refuses."""
        # Retain-as-published keeps the retain flag on live deliveries too, so a retained
        # command is recognisable however it arrives (MQTT 5 only).
        if self.v5:
            options = SubscribeOptions(qos=qos, retainAsPublished=True)
            rc, mid = self._client.subscribe(topic_filter, options=options)
        else:
            rc, mid = self._client.subscribe(topic_filter, qos=qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise SyncError(f"subscribe to {topic_filter} failed: {mqtt.error_string(rc)}")
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._subacks[mid] = waiter
        await _first(waiter, self.closed)
        if not waiter.done():
            raise SyncError(f"link lost before SUBACK for {topic_filter}: {self.closed.result()}")
        waiter.result()

    def ack(self, message: Message) -> bool:
        """Acknowledge a message received with `manual_ack`; False when the link that
        delivered it is gone (the broker then delivers it again on the next session)."""
        if message.qos == 0:
            return True
        if self.closed.done():
            return False
        rc = self._client.ack(message.mid, message.qos)
        return bool(rc == MQTTErrorCode.MQTT_ERR_SUCCESS)

    async def disconnect(self) -> None:
        """Clean DISCONNECT (the will is not published) and close the socket."""
        if self.closed.done():
            return
        properties = None
        if self.v5:
            # Keep the configured session on a clean shutdown too.
            properties = _properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = self.options.session_expiry_s
        self._client.disconnect(properties=properties)
        if self._sock is not None:
            self._client.loop_write()
        self._close("disconnected by us")

    def _close(self, reason: str) -> None:
        if self.closed.done():
            return
        self.closed.set_result(reason)
        sock = self._sock
        self._forget_socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        for waiter in [*self._waiters.values(), *self._subacks.values()]:
            if not waiter.done():
                waiter.set_exception(SyncError(f"link lost: {reason}"))
        self._waiters.clear()
        self._subacks.clear()
        if self._misc is not None and self._misc is not asyncio.current_task():
            self._misc.cancel()


async def _first(*futures: asyncio.Future[Any]) -> None:
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
