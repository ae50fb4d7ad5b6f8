"""The benchmark's side of the broker: it receives both agents' output and plays ThingsBoard.

One paho client with a persistent session (QoS 1), so nothing published while it is
reconnecting after the broker's restart is lost to it. It keeps every message with its
arrival time and decodes later, so the callback costs next to nothing. It also answers the
gateway's `getSessionLimits` RPC as a ThingsBoard server with the default tenant profile
does: no rate limits (the profile's limits are unset), the MQTT transport's default
payload size (65,536 bytes) and message queue per device (100).

A reading, for either agent, is one register value with its observation time: edge-agent's
envelopes (`contract.decode_data`, deduplicated by `(node, epoch, seq)` as the IOC
receiver does) and the gateway's `v1/gateway/telemetry` (deduplicated by
`(device, ts, key)`, as ThingsBoard stores time series: a second value with the same key
and timestamp overwrites the first, so only the first counts here).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.peer.configs import DEVICE_NAME, EDGE_NODE, EDGE_PREFIX, EDGE_SENSOR
from bench.peer.device import REGISTERS, serve_of
from edge_agent.contract import decode_data

RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
GATEWAY_TELEMETRY = "v1/gateway/telemetry"
NO_LIMITS = {"messages": None, "telemetryMessages": None, "telemetryDataPoints": None}
SESSION_LIMITS = {
    "maxPayloadSize": 65536,
    "maxInflightMessages": 100,
    "rateLimits": NO_LIMITS,
    "gatewayRateLimits": NO_LIMITS,
}
EDGE, GATEWAY = "edge-agent", "gateway"
QUANTITY_REGISTER = {f"reg{i:02d}": i for i in range(REGISTERS)}


@dataclass(frozen=True)
class Reading:
    agent: str
    register: int
    serve: int  # which serve of that register it carries (mod 65,536)
    observed: float  # the agent's observation time, epoch seconds
    arrived: float


class Collector:
    def __init__(self, port: int) -> None:
        self.port = port
        self._lock = threading.Lock()
        self._messages: list[tuple[float, str, bytes]] = []
        # Idempotency key -> the serve it carried: the same serve again is a duplicate, another
        # serve under the same key is overwritten where the data lands (lost).
        self._seen: dict[tuple[Any, ...], int] = {}
        self.readings: list[Reading] = []
        self.duplicates = {EDGE: 0, GATEWAY: 0}
        self.overwritten = {EDGE: 0, GATEWAY: 0}
        self.undecodable = {EDGE: 0, GATEWAY: 0}
        self.gap_events = 0
        self.session_limit_requests = 0
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="bench-peer-collector",
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=False,
        )
        self._client.max_inflight_messages_set(1000)
        self._client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def __enter__(self) -> Collector:
        self._client.connect("127.0.0.1", self.port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("collector: no SUBACK from the broker within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(f"{EDGE_PREFIX}/#", 1), (GATEWAY_TELEMETRY, 1), (RPC_REQUEST + "+", 1)])
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, _: Any, message: mqtt.MQTTMessage) -> None:
        arrived = time.time()
        if message.topic.startswith(RPC_REQUEST):
            self._answer_rpc(client, message)
            return
        with self._lock:
            self._messages.append((arrived, message.topic, bytes(message.payload)))

    def _answer_rpc(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        try:
            method = json.loads(message.payload).get("method")
        except (ValueError, AttributeError):
            return
        if method == "getSessionLimits":
            self.session_limit_requests += 1
            request_id = message.topic[len(RPC_REQUEST) :]
            client.publish(RPC_RESPONSE + request_id, json.dumps(SESSION_LIMITS), qos=1)

    def decode(self) -> list[Reading]:
        """Decode what arrived since the last call; the new readings, duplicates left out."""
        with self._lock:
            batch, self._messages = self._messages, []
        fresh: list[Reading] = []
        for arrived, topic, payload in batch:
            if topic == GATEWAY_TELEMETRY:
                fresh += self._gateway(arrived, payload)
            else:
                fresh += self._edge(arrived, topic, payload)
        self.readings += fresh
        return fresh

    def _edge(self, arrived: float, topic: str, payload: bytes) -> list[Reading]:
        if "/data/" not in topic:
            return []  # status (birth, will), replies
        try:
            envelopes = decode_data(topic, payload)
        except ValueError:
            self.undecodable[EDGE] += 1
            return []
        out = []
        for envelope in envelopes:
            if envelope.node != EDGE_NODE:
                continue
            if envelope.kind == "gap":
                self.gap_events += 1
            if envelope.kind != "reading" or envelope.data.get("sensor") != EDGE_SENSOR:
                continue
            register = QUANTITY_REGISTER.get(envelope.data.get("quantity", ""))
            value = envelope.data.get("value")
            if register is None or not isinstance(value, int | float):
                self.undecodable[EDGE] += 1
                continue
            serve = serve_of(register, int(value))
            if self._first(EDGE, envelope.key, serve):
                out.append(Reading(EDGE, register, serve, envelope.ts, arrived))
        return out

    def _gateway(self, arrived: float, payload: bytes) -> list[Reading]:
        try:
            body = json.loads(payload)
            entries = body.get(DEVICE_NAME, [])
        except (ValueError, AttributeError):
            self.undecodable[GATEWAY] += 1
            return []
        out = []
        for entry in entries if isinstance(entries, list) else [entries]:
            ts = entry.get("ts") if isinstance(entry, dict) else None
            values = entry.get("values", {}) if isinstance(entry, dict) else {}
            if not isinstance(ts, int | float) or not isinstance(values, dict):
                self.undecodable[GATEWAY] += 1
                continue
            for key, value in values.items():
                register = QUANTITY_REGISTER.get(key)
                if register is None or not isinstance(value, int | float):
                    self.undecodable[GATEWAY] += 1
                    continue
                serve = serve_of(register, int(value))
                if self._first(GATEWAY, (DEVICE_NAME, ts, key), serve):
                    out.append(Reading(GATEWAY, register, serve, ts / 1000, arrived))
        return out

    def _first(self, agent: str, key: tuple[Any, ...], serve: int) -> bool:
        """True for the first message under `key`; counts what comes after it."""
        known = self._seen.get(key)
        if known is None:
            self._seen[key] = serve
            return True
        if known == serve:
            self.duplicates[agent] += 1
        else:
            self.overwritten[agent] += 1
        return False
