"""The receiver against a real mosquitto: duplicates, holes, bad input, metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.ioc.metrics import serving
from edge_agent.ioc.sqlite_store import SqliteStore
from edge_agent.ioc.store import Store
from tests.conftest import Broker
from tests.ioc.conftest import (
    PREFIX,
    LightNode,
    eventually,
    publisher,
    reader_for,
    running_receiver,
)

pytestmark = pytest.mark.asyncio


def metric(text: str, name: str) -> float:
    """One sample of the Prometheus text exposition, by its full name and labels."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exposed")


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_a_duplicate_storm_and_a_new_epoch_store_each_key_once(
    broker: Broker, open_store: Callable[[], Store]
) -> None:
    node = LightNode("n1", epoch="e-first")
    restarted = LightNode("n1", epoch="e-second")
    batches = [node.batch(list(range(i, i + 250))) for i in range(1, 1001, 250)]
    async with running_receiver(broker, open_store, hole_timeout_s=0.0) as receiver:
        async with publisher(broker) as link:
            for _ in range(3):
                for payload in batches:
                    await link.publish(f"{node.topics.base}/data/batch", payload)
            # The node restarts with a fresh outbox: a new epoch whose seq starts at 1.
            await link.publish(f"{node.topics.base}/data/batch", restarted.batch([1, 2, 3]))
        metrics = receiver.metrics
        await eventually(lambda: metrics.value("ioc_duplicates_total") == 2000)
        reader = reader_for(open_store)
        try:
            await eventually(lambda: reader.count("n1") == 1003)

            def scanned() -> bool:
                rows = reader.db.query("SELECT max_seq, contiguous_seq FROM sequences")
                return len(rows) == 2 and all(r["max_seq"] == r["contiguous_seq"] for r in rows)

            await eventually(scanned)
            assert reader.seqs("n1", "e-first") == list(range(1, 1001))
            assert reader.seqs("n1", "e-second") == [1, 2, 3]
            assert reader.holes() == []
        finally:
            reader.close()
    assert metrics.value("ioc_events_stored_total") == 1003


async def test_a_hole_opens_after_the_timeout_and_closes_when_its_events_arrive(
    broker: Broker, tmp_path: Path
) -> None:
    path = tmp_path / "ioc.sqlite3"

    def opener() -> Store:
        return SqliteStore(path, synchronous="NORMAL")

    node = LightNode("n1")
    kept = [s for s in range(1, 101) if not 40 <= s <= 45 and not 60 <= s <= 62]
    gap = node.envelope(
        101,
        "gap",
        {"reason": "ttl", "priority": "reading", "first_seq": 60, "last_seq": 62, "count": 3},
    )
    async with running_receiver(broker, opener, hole_timeout_s=1.0) as receiver:
        async with publisher(broker) as link:
            await link.publish(f"{node.topics.base}/data/batch", node.batch(kept))
            await link.publish(f"{node.topics.base}/data/gap", gap)
            reader = reader_for(opener)
            try:
                await eventually(lambda: bool(reader.holes("n1")))
                holes = reader.holes("n1")
                assert [(h["first_seq"], h["last_seq"]) for h in holes] == [(40, 45)]
                gaps = reader.declared_gaps("n1")
                assert [(g["reason"], g["first_seq"], g["last_seq"]) for g in gaps] == [
                    ("ttl", 60, 62)
                ]
                assert receiver.metrics.value("ioc_open_holes") == 1
                # Late, not lost: the missing events arrive after the hole was reported.
                await link.publish(
                    f"{node.topics.base}/data/batch", node.batch(list(range(40, 46)))
                )
                await eventually(lambda: not reader.holes("n1"))
                closed = reader.db.query("SELECT state, closed_by FROM holes")
                assert closed == [{"state": "closed", "closed_by": "arrived"}]
            finally:
                reader.close()
        await eventually(lambda: receiver.metrics.value("ioc_open_holes") == 0)


async def test_bad_input_is_counted_by_reason_and_never_stored(
    broker: Broker, tmp_path: Path
) -> None:
    path = tmp_path / "ioc.sqlite3"

    def opener() -> Store:
        return SqliteStore(path, synchronous="NORMAL")

    node = LightNode("n1")
    good = json.loads(node.envelope(1))
    base = node.topics.base
    bad = [
        (f"{base}/data/aq-1", b"{not json"),
        (f"{base}/data/aq-1", json.dumps({**good, "v": 9}).encode()),
        (f"{base}/data/aq-1", json.dumps({**good, "kind": "weather"}).encode()),
        (f"{base}/data/aq-1", b"x" * 2048),
        (f"{PREFIX}/d1/n1/data/too/deep", node.envelope(2)),
        (f"{PREFIX}/d1/someone-else/data/aq-1", node.envelope(3)),
        (f"{PREFIX}/d1/n1/status", json.dumps({"v": 1, "node": "n1"}).encode()),
    ]
    async with (
        running_receiver(broker, opener, max_payload_bytes=1024) as receiver,
        serving(receiver.metrics, "127.0.0.1", 0) as port,
        publisher(broker) as link,
    ):
        for topic, payload in bad:
            await link.publish(topic, payload)
        await link.publish(f"{base}/data/aq-1", node.envelope(4))
        reader = reader_for(opener)
        try:
            await eventually(lambda: reader.count() == 1)
            assert reader.seqs("n1", node.epoch) == [4]
        finally:
            reader.close()
        text = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
    expected = {
        "malformed": 1,
        "unknown_version": 1,
        "schema": 2,
        "oversized": 1,
        "foreign_topic": 1,
        "node_mismatch": 1,
    }
    for reason, count in expected.items():
        assert metric(text, f'ioc_invalid_total{{reason="{reason}"}}') == count, reason
    assert metric(text, "ioc_events_stored_total") == 1
    assert metric(text, 'ioc_messages_total{type="data"}') == 7
    assert metric(text, "ioc_broker_connected") == 1
