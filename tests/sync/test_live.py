"""Live delivery: events committed to the outbox reach a subscriber in order, acked on PUBACK."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.contract import Envelope, decode_batch, reading_data
from tests.conftest import Broker
from tests.sync.conftest import (
    DISTRICT,
    NODE,
    PREFIX,
    eventually,
    listening,
    mqtt_config,
    open_outbox,
    put_readings,
    receiving,
    running_sync,
)
from tests.sync.peer import Peer

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_live_events_arrive_in_order_and_leave_the_outbox(
    broker: Broker, tmp_path: Path, protocol: str
) -> None:
    async with (
        open_outbox(tmp_path) as outbox,
        listening(broker, f"{PREFIX}/{DISTRICT}/{NODE}/data/#") as messages,
        running_sync(mqtt_config(broker, protocol=protocol), outbox),
    ):
        seqs = []
        for _ in range(20):
            seqs += await put_readings(outbox, 1)
        await eventually(lambda: len(messages) == 20)
        await eventually(lambda: outbox.stats()["pending_rows"] == 0)
    assert {m.topic for m in messages} == {f"{PREFIX}/{DISTRICT}/{NODE}/data/reading"}
    envelopes = [Envelope.decode(m.payload) for m in messages]
    assert [e.seq for e in envelopes] == seqs
    assert all(e.node == NODE and e.epoch == outbox.epoch for e in envelopes)
    assert envelopes[3].kind == "reading" and envelopes[3].data["value"] == 20.0


async def test_backlog_goes_out_as_compressed_batches(broker: Broker, tmp_path: Path) -> None:
    async with open_outbox(tmp_path) as outbox:
        seqs = await put_readings(outbox, 300)
        config = mqtt_config(broker, batch_max_events=100, batch_min_events=10)
        async with (
            listening(broker, f"{PREFIX}/{DISTRICT}/{NODE}/data/#") as messages,
            running_sync(config, outbox),
        ):
            await eventually(lambda: outbox.stats()["pending_rows"] == 0)
    assert {m.topic for m in messages} == {f"{PREFIX}/{DISTRICT}/{NODE}/data/batch"}
    assert len(messages) == 3
    assert messages[0].payload[:4] == b"\x28\xb5\x2f\xfd"
    got = [e.seq for m in messages for e in decode_batch(m.payload)]
    assert got == seqs


async def test_a_clean_stop_leaves_no_delivered_row_pending(broker: Broker, tmp_path: Path) -> None:
    """Stopped mid-drain (as on SIGTERM): whatever the broker acknowledged is deleted before
    the link and the outbox close, so only a dropped link ever causes duplicates."""
    fence = Envelope(
        "fence", "f", 1, 0.0, "reading", reading_data(sensor="x", quantity="x", value=1.0, unit="1")
    ).encode()
    async with open_outbox(tmp_path) as outbox, receiving(broker) as receiver:
        await put_readings(outbox, 3000)
        config = mqtt_config(broker, batch_max_events=1, inflight_window=100)
        async with running_sync(config, outbox):
            await eventually(lambda: receiver.count() > 300)
        # A round trip: what the node published before it stopped has reached the receiver.
        async with listening(broker, f"{PREFIX}/{DISTRICT}/fence/#", "fencer") as fenced:
            with Peer(broker, "fence") as peer:
                await peer.publish(f"{PREFIX}/{DISTRICT}/fence/data/x", fence)
            await eventually(lambda: receiver.count("fence") == 1 and len(fenced) == 1)
        delivered = set(receiver.seqs(NODE, outbox.epoch))
        pending = {row.seq for row in await outbox.claim(5000)}
    assert delivered and pending  # stopped in the middle
    assert not delivered & pending, sorted(delivered & pending)[:10]
