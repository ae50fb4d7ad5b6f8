"""One MQTT connection driven by the asyncio loop: paho's client under our own adapter.

Why not aiomqtt: its cost per publish grows with the number of pending publishes and it
wraps every publish in a future and a task; measured on loopback it drains at about a third
of paho's rate. paho exposes socket callbacks for an external event loop, so we register the
socket with asyncio ourselves and keep paho's packet code. The shape is aiomqtt's: a `Link`
is an async context manager (connect on enter, disconnect on exit), `subscribe()` returns
after the SUBACK, and every QoS 1 `publish()` returns one future that its PUBACK resolves.
Every connection gets a fresh paho client: the outbox, not paho's memory, is our session state.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, NoReturn

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.errors import SyncError
from edge_agent.sync.adapter import LoopSocket
from edge_agent.sync.values import (
    DISCONNECT_WITH_WILL,
    SESSION_TAKEN_OVER,
    Closed,
    LinkLost,
    LinkOptions,
    Message,
    Refused,
    Unreachable,
    Will,
    certificate_problem,
    tls_context,
)

log = logging.getLogger(__name__)

__all__ = [
    "SESSION_TAKEN_OVER",
    "Closed",
    "Link",
    "LinkLost",
    "LinkOptions",
    "Message",
    "Refused",
    "Unreachable",
    "Will",
]


def _properties(packet_type: int) -> Any:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def _failure(reason: Any) -> tuple[int, str] | None:
    """(code, name) of a reason code >= 0x80, else None."""
    if isinstance(reason, ReasonCode) and reason.is_failure:
        return int(reason.value), str(reason)
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        (item[0], item[1])
        for item in value
        if isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], str)
    )


class Link:
    """One MQTT connection: `async with Link(options) as link:`. `closed` resolves (with a
    `Closed`) once it is gone; every request pending then fails with `LinkLost`."""

    def __init__(
        self,
        options: LinkOptions,
        *,
        will: Will | None = None,
        on_message: Callable[[Message], None] | None = None,
    ) -> None:
        self.options = options
        self.will = will
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._connected: asyncio.Future[bool] = self._loop.create_future()
        self.closed: asyncio.Future[Closed] = self._loop.create_future()
        # One future per awaited request, resolved only by the paho callback for its mid.
        self._pubacks: dict[int, asyncio.Future[None]] = {}
        self._subacks: dict[int, asyncio.Future[int]] = {}
        self._last_error = ""
        self._misc: asyncio.TimerHandle | None = None
        self._connected_at: float | None = None
        self.session_present = False
        self.callback_errors = 0
        self.dropped_messages = 0
        self.v5 = options.protocol == "5"
        self._client = self._make_client()
        self._socket = LoopSocket(
            self._client, self._loop, on_failure=self._close, abandoned=self.closed.done
        )

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
        client.on_subscribe = self._handle_subscribe
        client.on_message = self._handle_message
        return client

    def _housekeeping(self) -> None:
        """paho's keepalive (PINGREQ, ping timeout) and our dead-link rule, on a timer."""
        self._misc = None
        if self.closed.done():
            return
        rc = self._client.loop_misc()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # NO_CONN: paho closed the socket; CONN_LOST: no PINGRESP in time.
            self._close(f"keepalive failed: {mqtt.error_string(rc)}")
            return
        silent = time.monotonic() - self._socket.last_rx
        if silent > 1.5 * self.options.keepalive_s:
            self._close(f"no packet from the broker for {silent:.0f} s (dead link)")
            return
        self._misc = self._loop.call_later(self._misc_period(), self._housekeeping)

    def _misc_period(self) -> float:
        return max(0.25, self.options.keepalive_s / 10)

    # -- paho callbacks (all on the loop thread once connected) -------------------------

    def _handle_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self._connected.done():
            return
        failure = _failure(reason)
        if failure is not None:
            self._connected.set_exception(Refused("the connection", *failure))
            return
        # paho formats a log line per packet while a log callback is set; once the
        # handshake is done the per-packet cost is not worth it (a tenth of the rate).
        if not log.isEnabledFor(logging.DEBUG):
            client.on_log = None
        self._connected_at = time.monotonic()
        self._connected.set_result(bool(getattr(flags, "session_present", False)))

    def _handle_log(self, client: Any, userdata: Any, level: int, text: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._last_error = text
        log.debug("paho: %s", text)

    def _handle_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        code = None
        if getattr(flags, "is_disconnect_packet_from_server", False) and isinstance(
            reason, ReasonCode
        ):
            code = int(reason.value)
        detail = f" ({self._last_error})" if self._last_error else ""
        self._close(f"disconnected: {reason}{detail}", code=code)

    def _handle_publish(
        self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        future = self._pubacks.pop(mid, None)
        if future is None or future.done():
            return
        failure = _failure(reason)
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(Refused("a publish", *failure))

    def _handle_subscribe(
        self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        future = self._subacks.pop(mid, None)
        if future is None or future.done():
            return
        for reason in reasons or ():
            failure = _failure(reason)
            if failure is not None:
                future.set_exception(Refused("the subscription", *failure))
                return
        first = reasons[0] if reasons else None
        future.set_result(int(first.value) if isinstance(first, ReasonCode) else 0)

    def _handle_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._on_message is None:
            return
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            # MQTT requires UTF-8 topics; nobody could answer this one.
            self.dropped_messages += 1
            return
        props = getattr(msg, "properties", None)
        correlation = getattr(props, "CorrelationData", None)
        message = Message(
            topic=topic,
            payload=bytes(msg.payload),
            retain=bool(msg.retain),
            qos=int(msg.qos),
            response_topic=_text(getattr(props, "ResponseTopic", None)),
            correlation_data=bytes(correlation)
            if isinstance(correlation, bytes | bytearray)
            else None,
            user_properties=_pairs(getattr(props, "UserProperty", None)),
            content_type=_text(getattr(props, "ContentType", None)),
            mid=int(msg.mid),
        )
        try:
            self._on_message(message)
        except Exception:
            # A bug in the receiving component must not become paho's: raised from here,
            # it would skip the PUBACK and get the message redelivered forever.
            self.callback_errors += 1
            log.exception("message handler failed on %s", topic)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Link:
        """Open the connection and wait for CONNACK. Raises `Unreachable` (no TCP
        connection), `Refused` (CONNACK >= 0x80) or `SyncError` (TLS, timeouts)."""
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
                    raise Unreachable(f"cannot connect to {o.host}:{o.port}: {rc}")
                self._socket.last_rx = time.monotonic()
                self._misc = self._loop.call_later(self._misc_period(), self._housekeeping)
                await asyncio.wait((self._connected, self.closed), return_when="FIRST_COMPLETED")
        except TimeoutError:
            self._close("connect timed out")
            raise Unreachable(
                f"no CONNACK from {o.host}:{o.port} within {o.connect_timeout_s:.0f} s"
            ) from None
        except ssl.SSLError as exc:
            self._close("TLS failed")
            why = f"TLS handshake with {o.host}:{o.port} failed: {exc}"
            raise SyncError(self._explained(why)) from exc
        except OSError as exc:
            self._close("connect failed")
            raise Unreachable(f"cannot connect to {o.host}:{o.port}: {exc}") from exc
        except BaseException:
            self._close("connect abandoned")
            raise
        if not self._connected.done():
            # The broker took the connection and closed it (a refused client certificate
            # under TLS 1.3 looks like this): reachable, so not worth probing for.
            why = f"connection to {o.host}:{o.port} closed: {self.closed.result().reason}"
            raise SyncError(self._explained(why))
        if self._connected.exception() is not None:
            self._close("refused by the broker")
        self.session_present = self._connected.result()
        return self

    def _explained(self, why: str) -> str:
        """`why`, with what the node's certificate files say is wrong with them."""
        problem = certificate_problem(self.options) if self.options.tls else None
        return f"{why}; {problem}" if problem else why

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect. A clean exit (or a cancellation: the agent is stopping) sends a
        normal DISCONNECT, so the will is not published; a failure asks the broker to
        publish the will, so the IOC hears that this node went away."""
        if self.closed.done():
            return
        failed = exc is not None and not isinstance(exc, asyncio.CancelledError | LinkLost)
        properties = None
        if self.v5:
            # Keep the configured session on a clean shutdown too.
            properties = _properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = self.options.session_expiry_s
        reasoncode = None
        if self.v5 and failed:
            reasoncode = ReasonCode(PacketTypes.DISCONNECT, identifier=DISCONNECT_WITH_WILL)
        rc = self._client.disconnect(reasoncode=reasoncode, properties=properties)
        # NO_CONN (paho already lost the socket) and AGAIN (the DISCONNECT did not fit the
        # socket buffer) mean the broker sees a dropped link and publishes the will: the
        # socket is closed below either way.
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._socket.sock is not None:
            rc = self._client.loop_write()
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.debug("DISCONNECT not sent cleanly: %s", mqtt.error_string(rc))
        self._close("disconnected by us")

    def _close(self, reason: str, *, code: int | None = None) -> None:
        if self.closed.done():
            return
        uptime = None if self._connected_at is None else time.monotonic() - self._connected_at
        closed = Closed(reason, code, uptime)
        self.closed.set_result(closed)
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        self._socket.close()
        lost = LinkLost(closed)
        waiters: list[asyncio.Future[Any]] = [*self._pubacks.values(), *self._subacks.values()]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(lost)
                # Marked as seen: a window publish nobody awaits any more (its rows are
                # released) must not log "exception was never retrieved".
                waiter.exception()
        self._pubacks.clear()
        self._subacks.clear()

    # -- requests -----------------------------------------------------------------------

    async def wait_closed(self) -> NoReturn:
        """Wait for the link to end and raise `LinkLost`: a sibling task that ends a
        TaskGroup serving this link."""
        raise LinkLost(await asyncio.shield(self.closed))

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
    ) -> asyncio.Future[None]:
        """Queue one publish. The future resolves on its PUBACK, fails with `Refused` when
        the broker refuses it (MQTT 5 reason >= 0x80) or `LinkLost`; for QoS 0 it is done
        once queued. Raises `SyncError` at once for what paho cannot send."""
        if self.closed.done():
            raise LinkLost(self.closed.result())
        properties = None
        if self.v5 and (content_type or correlation_data or response_topic):
            properties = _properties(PacketTypes.PUBLISH)
            if response_topic:
                properties.ResponseTopic = response_topic
            if content_type:
                properties.ContentType = content_type
            if correlation_data:
                properties.CorrelationData = correlation_data
        try:
            info = self._client.publish(
                topic, payload, qos=qos, retain=retain, properties=properties
            )
        except (ValueError, TypeError) as exc:  # wildcards in the topic, a bad QoS, too big
            raise SyncError(f"cannot publish to {topic!r}: {exc}") from None
        # Every return code is checked: MQTT_ERR_QUEUE_SIZE (ids exhausted) would otherwise
        # lose the message silently.
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            self._close("publish found no connection")
            raise LinkLost(self.closed.result())
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SyncError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        future: asyncio.Future[None] = self._loop.create_future()
        if qos == 0:
            future.set_result(None)
        else:
            self._pubacks[int(info.mid)] = future
        return future

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe and wait for the SUBACK; returns the granted QoS. Raises `Refused` when
        the broker refuses (reason >= 0x80, e.g. 0x87 not authorized by its ACL)."""
        if self.closed.done():
            raise LinkLost(self.closed.result())
        try:
            # Retain-as-published keeps the retain flag on live deliveries too, so a retained
            # command is recognisable however it arrives (MQTT 5 only).
            if self.v5:
                options = SubscribeOptions(qos=qos, retainAsPublished=True)
                rc, mid = self._client.subscribe(topic_filter, options=options)
            else:
                rc, mid = self._client.subscribe(topic_filter, qos=qos)
        except ValueError as exc:
            raise SyncError(f"cannot subscribe to {topic_filter!r}: {exc}") from None
        if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            self._close("subscribe found no connection")
            raise LinkLost(self.closed.result())
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise SyncError(f"subscribe to {topic_filter} failed: {mqtt.error_string(rc)}")
        future: asyncio.Future[int] = self._loop.create_future()
        self._subacks[mid] = future
        return await future

    def ack(self, message: Message) -> bool:
        """Acknowledge a message received with `manual_ack`; False when the link that
        delivered it is gone (the broker then delivers it again on the next session)."""
        if message.qos == 0:
            return True
        if self.closed.done():
            return False
        rc = self._client.ack(message.mid, message.qos)
        return bool(rc == MQTTErrorCode.MQTT_ERR_SUCCESS)
