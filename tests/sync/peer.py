"""A raw paho MQTT client on its own thread: the IOC, or an attacker, in tests.

Deliberately not our `Link`: what a node receives in these tests comes from a plain client
that can set any MQTT 5 property, the way a hostile or careless sender would.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import Broker


class Peer:
    """`with Peer(broker, "ioc") as ioc:`; `messages` holds everything it received."""

    def __init__(self, broker: Broker, client_id: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.max_inflight_messages_set(1000)
        self.port = broker.port
        self.messages: list[mqtt.MQTTMessage] = []
        self._connected = threading.Event()
        self._subacks: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set()
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_subscribe = self._on_subscribe

    def _on_subscribe(self, c: Any, u: Any, mid: int, codes: Any, props: Any) -> None:
        with self._lock:
            event = self._subacks.setdefault(mid, threading.Event())
        event.set()

    def __enter__(self) -> Peer:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("no CONNACK")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    async def subscribe(self, topic_filter: str) -> None:
        """Subscribe and wait for the SUBACK."""
        rc, mid = self.client.subscribe(topic_filter, qos=1)
        assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None
        with self._lock:
            event = self._subacks.setdefault(mid, threading.Event())
        assert await asyncio.to_thread(event.wait, 10), f"no SUBACK for {topic_filter}"

    def send(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        user_properties: Iterable[tuple[str, str]] = (),
        content_type: str | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """Queue one publish with any MQTT 5 properties (no check of our own)."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if response_topic is not None:
            props.ResponseTopic = response_topic
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        pairs = list(user_properties)
        if pairs:
            props.UserProperty = pairs
        if content_type is not None:
            props.ContentType = content_type
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        assert info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS, info.rc
        return info

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        """Publish and wait for the PUBACK (the broker has routed it)."""
        info = self.send(topic, payload, **kwargs)
        await asyncio.to_thread(info.wait_for_publish, 10)
        assert info.is_published(), f"no PUBACK for {topic}"

    def replies(self, verb: str | None = None) -> list[dict[str, Any]]:
        out = []
        for message in list(self.messages):
            if "/reply/" not in message.topic or (verb and not message.topic.endswith(verb)):
                continue
            reply = json.loads(message.payload)
            reply["_topic"] = message.topic
            reply["_correlation"] = getattr(message.properties, "CorrelationData", None)
            out.append(reply)
        return out
