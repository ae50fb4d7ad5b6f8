"""What the broker refuses is shown, not hidden: a refused command subscription, refused
publishes, and another client taking over our session, each as degraded with its reason code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_agent.config import MqttConfig
from edge_agent.config.mqtt import generic_node_id
from edge_agent.health import State
from edge_agent.sync.link import SESSION_TAKEN_OVER, Link, LinkOptions
from tests.conftest import Broker, refusing_broker
from tests.sync.conftest import (
    DISTRICT,
    NODE,
    PREFIX,
    eventually,
    mqtt_config,
    open_outbox,
    put_readings,
    running_sync,
)

BASE = f"{PREFIX}/{DISTRICT}/{NODE}"


@pytest.mark.asyncio
@pytest.mark.parametrize(("protocol", "code"), [("5", 0x87), ("3.1.1", 0x80)])
async def test_refused_command_subscription_is_degraded_with_its_reason(
    broker: Broker, tmp_path: Path, protocol: str, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    refusing_broker(broker, ("subscribePattern", f"{PREFIX}/+/+/cmd/+"))
    caplog.set_level(logging.INFO, logger="edge_agent.sync")
    async with (
        open_outbox(tmp_path) as outbox,
        running_sync(mqtt_config(broker, protocol=protocol), outbox) as sync,
    ):
        await eventually(lambda: sync.health.reason is not None and sync.link is not None)
        await eventually(lambda: sync.health.reason.code != "connecting")  # type: ignore[union-attr]
        assert sync.health.state is State.DEGRADED
        assert sync.health.reason is not None
        assert sync.health.reason.code == "commands_refused"
        assert dict(sync.health.reason.params) == {
            "topic": f"{BASE}/cmd/+",
            "reason_code": code,
        }
        # Deaf to commands, but the data still flows.
        await put_readings(outbox, 3)
        await eventually(lambda: outbox.stats()["pending_rows"] == 0)
    said = [r.getMessage() for r in caplog.records if "refused the subscription" in r.getMessage()]
    assert len(said) == 1 and f"{BASE}/cmd/+" in said[0] and f"0x{code:02X}" in said[0], said


@pytest.mark.asyncio
async def test_refused_publishes_are_degraded_and_kept(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refusing_broker(broker, ("publishClientSend", f"{PREFIX}/+/+/data/#"))
    caplog.set_level(logging.INFO, logger="edge_agent.sync")
    async with open_outbox(tmp_path) as outbox, running_sync(mqtt_config(broker), outbox) as sync:
        assert sync.publisher is not None
        await put_readings(outbox, 5)
        health = sync.publisher_health
        await eventually(lambda: health.counters.get("rejected_by_broker", 0) >= 1)
        assert health.state is State.DEGRADED
        assert health.reason is not None and health.reason.code == "publish_refused"
        assert dict(health.reason.params) == {"topic": f"{BASE}/data/reading", "reason_code": 0x87}
        assert outbox.stats()["pending_rows"] == 5  # nothing is lost
        # mosquitto 2.0 may drop a link after refusing a publish on it: that is not taken
        # for another client with our id.
        await put_readings(outbox, 1)
        await eventually(lambda: health.counters.get("rejected_by_broker", 0) >= 2, timeout_s=30)
        assert sync.health.reason is not None
        assert sync.health.reason.code != "client_id_in_use"
    said = [r.getMessage() for r in caplog.records if "refused a publish" in r.getMessage()]
    assert len(said) == 1 and f"{BASE}/data/reading" in said[0] and "0x87" in said[0], said


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_two_nodes_with_one_id_both_name_the_problem(
    broker: Broker, tmp_path: Path, protocol: str
) -> None:
    config = mqtt_config(broker, protocol=protocol)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        open_outbox(tmp_path / "a") as outbox_a,
        open_outbox(tmp_path / "b") as outbox_b,
        running_sync(config, outbox_a) as a,
        running_sync(config, outbox_b) as b,
    ):

        def named(sync: object) -> bool:
            health = sync.health  # type: ignore[attr-defined]
            return health.reason is not None and health.reason.code == "client_id_in_use"

        await eventually(lambda: named(a) and named(b), timeout_s=30)
        for sync in (a, b):
            assert sync.health.state is State.DEGRADED
            assert sync.health.reason is not None
            assert dict(sync.health.reason.params) == {"client_id": f"edge-{NODE}", "node": NODE}
            assert "another client is using node id" in sync.health.reason.text
        # Backing off instead of flapping: the attempts do not reset to the base delay.
        assert a._retry.attempts >= 1 and b._retry.attempts >= 1


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(1)
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return header + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def taking_over_broker() -> AsyncIterator[int]:
    """An MQTT 5 peer that accepts each CONNECT, then says another client took the session
    (DISCONNECT 0x8E), as EMQX, HiveMQ and newer mosquitto do (mosquitto 2.0.11 only closes
    the socket, which the quick-drop rule covers)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            packet = await _read_packet(reader)
            assert packet[0] >> 4 == 1, packet  # CONNECT
            writer.write(b"\x20\x03\x00\x00\x00")  # CONNACK: success, no properties
            writer.write(bytes([0xE0, 0x02, SESSION_TAKEN_OVER, 0x00]))  # DISCONNECT 0x8E
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.mark.asyncio
async def test_session_taken_over_0x8e_is_named_at_once(tmp_path: Path) -> None:
    async with taking_over_broker() as port:
        options = LinkOptions("127.0.0.1", port, client_id="same-id")
        async with Link(options) as link:
            closed = await link.closed
        assert closed.code == SESSION_TAKEN_OVER, closed
        config = MqttConfig(host="127.0.0.1", port=port, backoff_min_s=0.05, backoff_max_s=0.5)
        async with open_outbox(tmp_path) as outbox, running_sync(config, outbox) as sync:
            await eventually(lambda: sync.health.counters.get("sessions_taken_over", 0) >= 3)
            assert sync.health.reason is not None
            assert sync.health.reason.code == "client_id_in_use"
            assert sync._retry.attempts >= 3  # backing off, never reset by the short links


def test_generic_host_names_are_flagged_as_node_ids() -> None:
    for name in ("localhost", "raspberrypi", "debian", "ubuntu", "vm", "orangepi", "node", "pi-2"):
        assert generic_node_id(name, explicit=False), name
    assert not generic_node_id("raspberrypi", explicit=True)
    for name in ("hcm-q1-node-07", "danang-lienchieu-3"):
        assert not generic_node_id(name, explicit=False), name


@pytest.mark.asyncio
async def test_a_returning_broker_is_found_by_probing_not_by_the_backoff(
    broker: Broker, tmp_path: Path
) -> None:
    # A backoff this long would keep the node away for minutes after the broker returns;
    # the TCP probe brings it back as soon as the broker listens.
    config = mqtt_config(broker, backoff_min_s=300.0, backoff_max_s=600.0)
    async with open_outbox(tmp_path) as outbox, running_sync(config, outbox) as sync:
        await eventually(lambda: sync.link is not None)
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: sync.health.state is State.DEGRADED)
        await put_readings(outbox, 10)
        await asyncio.to_thread(broker.start)
        await eventually(lambda: outbox.stats()["pending_rows"] == 0, timeout_s=60)
        assert sync.health.counters.get("probes_answered", 0) >= 1
        assert sync.health.state is State.OK
