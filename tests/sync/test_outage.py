"""Links that drop: a 30 s outage while events keep coming, and a broker that forgets sessions."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from edge_agent.contract import decode_data
from edge_agent.sync.link import Message
from tests.conftest import Broker
from tests.sync.conftest import (
    NODE,
    PREFIX,
    client_options,
    eventually,
    listening,
    mqtt_config,
    open_outbox,
    put_readings,
    running_receiver,
    running_sync,
)

pytestmark = pytest.mark.asyncio

OUTAGE_S = 30.0


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_outage_of_30_s_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    window, batch_max = 20, 50
    # The broker must be able to save its sessions: run as root, mosquitto would drop to its
    # own user, which cannot write into pytest's private tmp dir, and silently persist nothing.
    broker.extra_config = "user root"
    broker.restart()
    config = mqtt_config(broker, inflight_window=window, batch_max_events=batch_max)
    # A persistent receiver session: what the node sends before the receiver is back waits.
    async with (
        running_receiver(broker, tmp_path / "ioc.sqlite3") as (receiver, stored),
        open_outbox(tmp_path) as outbox,
        running_sync(config, outbox) as sync,
    ):
        await eventually(lambda: sync.link is not None)
        produced = await put_readings(outbox, 50)
        await eventually(lambda: stored.count() == 50)

        async def produce(seconds: float) -> None:
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while loop.time() < end:
                produced.extend(await put_readings(outbox, 1))
                await asyncio.sleep(0.02)

        producer = asyncio.create_task(produce(OUTAGE_S))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(broker.stop)
        assert (broker.directory / "mosquitto.db").exists()  # the receiver's session is saved
        await eventually(lambda: sync.health.state.value == "degraded")
        await producer
        during = outbox.stats()["pending_rows"]
        await asyncio.to_thread(broker.start)
        await eventually(lambda: stored.count() == len(produced), timeout_s=60)
        await eventually(lambda: outbox.stats()["pending_rows"] == 0)
        assert during > 1000  # the outage really buffered: ~30 s at ~45 events/s
        assert stored.seqs(NODE, outbox.epoch) == produced
        assert stored.holes() == []
        assert receiver.metrics.value("ioc_duplicates_total") <= window * batch_max


async def test_broker_without_persistence_gets_everything_resent(
    broker: Broker, tmp_path: Path
) -> None:
    broker.persistence = False
    broker.restart()
    # Rate-limited so that the broker goes away in the middle of the drain.
    # The node waits at least a second before it reconnects: on the restarted broker, which
    # forgot every subscription, the second subscriber is there first.
    config = mqtt_config(
        broker, rate_messages_per_s=100, batch_max_events=1, backoff_min_s=2.0, backoff_max_s=3.0
    )
    async with open_outbox(tmp_path) as outbox:
        produced = await put_readings(outbox, 400)
        received: set[int] = set()

        def seqs(messages: list[Message]) -> set[int]:
            return {e.seq for m in messages for e in decode_data(m.topic, m.payload)}

        # Plain subscribers that acknowledge on receipt: a broker without persistence loses
        # what it accepted and had not handed out when it stops, and an observer that
        # acknowledges only after a commit (the receiver) leaves more of that in flight.
        # The first subscribes before the node starts sending.
        async with (
            listening(broker, f"{PREFIX}/+/+/data/#", "first") as first,
            running_sync(config, outbox) as sync,
        ):
            await eventually(lambda: len(seqs(first)) > 50)
            await asyncio.to_thread(broker.restart)
            received.update(seqs(first))
            assert 0 < len(received) < 400
            async with listening(broker, f"{PREFIX}/+/+/data/#", "second") as second:
                await eventually(lambda: outbox.stats()["pending_rows"] == 0, timeout_s=30)
                await eventually(lambda: sync.link is not None)
                received.update(seqs(second))
    assert sorted(received) == produced


async def test_a_silent_broker_is_detected_as_a_dead_link(broker: Broker) -> None:
    from edge_agent.sync.link import Link

    link = Link(client_options(broker, "frozen", keepalive_s=2))
    await link.connect()
    assert broker.process is not None
    broker.process.send_signal(signal.SIGSTOP)  # the TCP link stays up, nothing answers
    try:
        reason = await link.closed
    finally:
        broker.process.send_signal(signal.SIGCONT)
    # Declared dead by our own rule (nothing received for 1.5 x keepalive), not by TCP.
    assert "dead link" in reason, reason
