"""Receivers as processes: SIGKILL mid-backlog, two receivers sharing one subscription."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_agent.ioc.fleet import Reader
from tests.conftest import Broker
from tests.ioc.conftest import LightNode, eventually, publisher
from tests.ioc.processes import ReceiverProcess

pytestmark = pytest.mark.asyncio


async def publish_backlog(broker: Broker, nodes: list[LightNode], batches: int, size: int) -> int:
    async with publisher(broker) as link:
        for n in range(batches):
            for node in nodes:
                seqs = list(range(n * size + 1, (n + 1) * size + 1))
                await link.publish(f"{node.topics.base}/data/batch", node.batch(seqs))
    return batches * size * len(nodes)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_receiver_killed_mid_backlog_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    db = tmp_path / "ioc.sqlite3"
    receiver = ReceiverProcess(broker.port, tmp_path, db=db)
    nodes = [LightNode(f"n{i}") for i in range(4)]
    try:
        # The first run creates the persistent session; then the receiver is away while the
        # backlog arrives, and the broker keeps it.
        receiver.start()
        await eventually(receiver.subscribed)
        receiver.stop()
        total = await publish_backlog(broker, nodes, batches=40, size=500)
        receiver.start()
        with Reader.open(path=db) as reader:
            await eventually(lambda: reader.count() > 0)
            receiver.kill()  # SIGKILL between receiving and committing, with acks unsent
            at_kill = reader.count()
            assert 0 < at_kill < total, "the kill must land in the middle of the backlog"
            receiver.start()
            await eventually(lambda: reader.count() == total, timeout_s=120)
            for node in nodes:
                assert reader.seqs(node.node, node.epoch) == list(range(1, 40 * 500 + 1))
    finally:
        receiver.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_two_receivers_share_the_feed_into_postgres_and_one_may_die(
    broker: Broker, tmp_path: Path, pg_dsn: str
) -> None:
    group = ("--share-group", "province")
    first = ReceiverProcess(broker.port, tmp_path, client_id="ioc-a", dsn=pg_dsn, extra=group)
    second = ReceiverProcess(broker.port, tmp_path, client_id="ioc-b", dsn=pg_dsn, extra=group)
    nodes = [LightNode(f"n{i}") for i in range(6)]
    try:
        first.start()
        second.start()
        await eventually(lambda: first.subscribed() and second.subscribed())
        with Reader.open(dsn=pg_dsn) as reader:
            total = await publish_backlog(broker, nodes, batches=10, size=200)
            await eventually(lambda: reader.count() == total, timeout_s=120)
            stored = [r.metrics()["ioc_events_stored_total"] for r in (first, second)]
            duplicates = [r.metrics()["ioc_duplicates_total"] for r in (first, second)]
            # Split between the two, each event exactly once between them.
            assert min(stored) > 0 and sum(stored) == total and sum(duplicates) == 0

            async def stream() -> int:
                return await publish_backlog(
                    broker, [LightNode(f"m{i}") for i in range(6)], batches=30, size=200
                )

            streaming = asyncio.create_task(stream())
            await eventually(lambda: reader.count() > total + 2000)
            first.kill()
            more = await streaming
            # The broker keeps the dead receiver's session and what it was given; it comes
            # back with the same client id and takes them.
            first.start()
            await eventually(lambda: reader.count() == total + more, timeout_s=120)
            for i in range(6):
                assert reader.seqs(f"m{i}", LightNode("m").epoch) == list(range(1, 30 * 200 + 1))
    finally:
        first.stop()
        second.stop()
