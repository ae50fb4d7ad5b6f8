"""Links that drop: a 30 s outage while events keep coming, and a broker that forgets sessions."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from edge_agent.outbox import Outbox
from tests.conftest import Broker
from tests.sync.conftest import (
    NODE,
    client_options,
    eventually,
    mqtt_config,
    open_outbox,
    put_readings,
    receiving,
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


class AckLog:
    """The real outbox, noting which seqs the node deleted on a PUBACK."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.acked: set[int] = set()

    @property
    def epoch(self) -> str:
        return self.outbox.epoch

    async def claim(self, limit: int) -> Sequence[Any]:
        return await self.outbox.claim(limit)

    async def ack(self, seqs: Sequence[int]) -> None:
        self.acked.update(seqs)
        await self.outbox.ack(seqs)

    def release(self, seqs: Sequence[int] | None = None) -> None:
        self.outbox.release(seqs)

    async def wait_for_rows(self, timeout: float | None = None) -> None:
        await self.outbox.wait_for_rows(timeout)

    def stats(self) -> dict[str, Any]:
        return self.outbox.stats()


async def test_broker_without_persistence_gets_everything_resent(
    broker: Broker, tmp_path: Path
) -> None:
    broker.persistence = False
    broker.restart()
    # Rate-limited so that the broker goes away in the middle of the drain. The broker keeps
    # nothing: what the node sends before the second receiver has subscribed is gone, so the
    # node comes back only after its backoff (no probe), long after that subscription.
    config = mqtt_config(
        broker,
        rate_messages_per_s=100,
        batch_max_events=1,
        backoff_min_s=4.0,
        backoff_max_s=5.0,
        probe_interval_s=0,
    )
    async with open_outbox(tmp_path) as outbox:
        produced = await put_readings(outbox, 400)
        log = AckLog(outbox)
        received: set[int] = set()
        async with running_sync(config, log) as sync:  # type: ignore[arg-type]
            async with receiving(broker) as first:
                await eventually(lambda: first.count() > 50)
                await asyncio.to_thread(broker.restart)
                acked_by_the_first_broker = set(log.acked)
                received.update(first.seqs(NODE, outbox.epoch))
            assert 0 < len(received) < 400
            async with receiving(broker) as second:
                await eventually(lambda: outbox.stats()["pending_rows"] == 0, timeout_s=30)
                await eventually(lambda: sync.link is not None)
                # Wait for what the claim below needs: all the first broker had not
                # acknowledged has come through the second.
                owed = set(produced) - acked_by_the_first_broker
                try:
                    await eventually(
                        lambda: owed <= received | set(second.seqs(NODE, outbox.epoch)),
                        timeout_s=30,
                    )
                except AssertionError:
                    got = set(second.seqs(NODE, outbox.epoch))
                    raise AssertionError(
                        f"owed {len(owed)}, first {len(received)}, second {len(got)}, "
                        f"missing {sorted(owed - received - got)[:20]}"
                    ) from None
                received.update(second.seqs(NODE, outbox.epoch))
    # Everything the first broker had not acknowledged came again through the second. What
    # it had acknowledged but not yet passed on died with it: only broker persistence keeps
    # that (the receiver shares this test's event loop and may lag behind).
    missing = set(produced) - received
    assert missing <= acked_by_the_first_broker, sorted(missing - acked_by_the_first_broker)
    assert received - set(produced) == set()


async def test_a_silent_broker_is_detected_as_a_dead_link(broker: Broker) -> None:
    from edge_agent.sync.link import Link

    async with Link(client_options(broker, "frozen", keepalive_s=2)) as link:
        assert broker.process is not None
        broker.process.send_signal(signal.SIGSTOP)  # the TCP link stays up, nothing answers
        try:
            closed = await link.closed
        finally:
            broker.process.send_signal(signal.SIGCONT)
    # Declared dead by our own rule (nothing received for 1.5 x keepalive), or by paho's
    # missing PINGRESP; not by TCP.
    assert "dead link" in closed.reason or "keepalive" in closed.reason, closed
