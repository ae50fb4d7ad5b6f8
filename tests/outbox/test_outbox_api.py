"""The outbox's async API on real SQLite files: commit, order, claim/release/ack, bounds."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from pathlib import Path

import pytest

from edge_agent.contract import Envelope, Kind, Priority
from edge_agent.errors import StorageError
from edge_agent.health import State
from tests.outbox.helpers import eventually, make_outbox, rows_in
from tests.sync.schema import validate


@pytest.mark.asyncio
async def test_put_commits_before_returning_and_payload_is_the_envelope(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with make_outbox(path) as outbox:
        seq = await outbox.put(Kind.READING, {"value": 1.5}, stream="aq", ts=1700000000.0)
        # A fresh connection sees the row: it was committed before put() returned.
        priority, kind, envelope = rows_in(path)[seq]
        assert (priority, kind) == (Priority.READING, "reading")
        assert envelope == {
            "v": 1,
            "node": "node-1",
            "epoch": outbox.epoch,
            "seq": seq,
            "ts": "2023-11-14T22:13:20.000Z",
            "kind": "reading",
            "data": {"value": 1.5},
        }
        (row,) = await outbox.claim(10)
        assert Envelope.decode(row.payload).key == ("node-1", outbox.epoch, seq)
        assert outbox.health.state is State.OK


@pytest.mark.asyncio
async def test_a_burst_is_group_committed(tmp_path: Path) -> None:
    async with make_outbox(tmp_path / "o.sqlite3", commit_window_ms=5) as outbox:
        before = outbox.stats()["transactions"]
        seqs = await asyncio.gather(
            *(outbox.put(Kind.READING, {"i": i}, stream="s") for i in range(500))
        )
        transactions = outbox.stats()["transactions"] - before
    assert sorted(seqs) == list(range(seqs[0], seqs[0] + 500))
    assert transactions < 50, transactions


@pytest.mark.asyncio
async def test_claim_order_release_and_ack(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    async with make_outbox(path) as outbox:
        health = await outbox.put(Kind.HEALTH, {}, stream="h")
        reading = await outbox.put(Kind.READING, {}, stream="r")
        detection = await outbox.put(Kind.DETECTION, {}, stream="d")
        alert = await outbox.put(Kind.ALERT, {}, stream="a")
        first = await outbox.claim(2)
        assert [r.seq for r in first] == [alert, detection]
        # Claimed and not acked: never handed out twice until released.
        second = await outbox.claim(10)
        assert [r.seq for r in second] == [reading, health]
        assert await outbox.claim(10) == []
        outbox.release([detection])
        assert [r.seq for r in await outbox.claim(10)] == [detection]
        await outbox.ack([alert, detection])
        assert set(rows_in(path)) == {reading, health}
        outbox.release()
        assert [r.seq for r in await outbox.claim(10)] == [reading, health]
        assert outbox.stats()["pending_rows"] == 2
        assert outbox.stats()["acked"] == 2


@pytest.mark.asyncio
async def test_a_claim_is_not_queued_behind_a_stuck_write(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    async with make_outbox(path) as outbox:
        seqs = [await outbox.put(Kind.READING, {"i": i}, stream="s") for i in range(3)]
        # Another process holding the write lock: the writer thread waits on it.
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            stuck = asyncio.ensure_future(outbox.put(Kind.READING, {"i": 3}, stream="s"))
            await asyncio.sleep(0.1)  # let the writer take the put and block on the lock
            # WAL readers do not wait for writers: the committed rows are claimed now.
            assert [r.seq for r in await outbox.claim(10)] == seqs
            assert not stuck.done()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await stuck == seqs[-1] + 1
        assert [r.seq for r in await outbox.claim(10)] == [seqs[-1] + 1]


@pytest.mark.asyncio
async def test_claimed_rows_come_back_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    async with make_outbox(path) as outbox:
        epoch = outbox.epoch
        seqs = [await outbox.put(Kind.READING, {"i": i}, stream="s") for i in range(5)]
        assert len(await outbox.claim(5)) == 5
        await outbox.ack(seqs[:2])
    async with make_outbox(path) as outbox:
        assert outbox.epoch == epoch
        assert [r.seq for r in await outbox.claim(10)] == seqs[2:]
        # seq never goes back, even after its rows were deleted.
        await outbox.ack(seqs[2:])
        assert await outbox.put(Kind.READING, {}, stream="s") == seqs[-1] + 1


@pytest.mark.asyncio
async def test_bad_event_is_refused_alone(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    async with make_outbox(path, max_bytes=256 * 1024) as outbox:
        results = await asyncio.gather(
            outbox.put(Kind.READING, {"value": 1.0}, stream="s"),
            outbox.put(Kind.READING, {"value": math.nan}, stream="s"),
            outbox.put(Kind.READING, {"blob": "x" * (80 * 1024)}, stream="s"),
            outbox.put(Kind.READING, {"value": 2.0}, stream="s"),
            return_exceptions=True,
        )
        assert isinstance(results[1], StorageError)
        assert "reading event on stream s not stored" in str(results[1])
        assert isinstance(results[2], StorageError) and "exceeds" in str(results[2])
        good = [r for r in results if isinstance(r, int)]
        # No seq is burnt on a refused event: the IOC sees no hole.
        assert good[1] == good[0] + 1
        assert sorted(rows_in(path)) == good


@pytest.mark.asyncio
async def test_quota_drops_oldest_lowest_priority_and_queues_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    async with make_outbox(path, max_bytes=64 * 1024, commit_window_health_ms=0) as outbox:
        alert = await outbox.put(Kind.ALERT, {"x": "a" * 1000}, stream="a")
        readings = [
            await outbox.put(Kind.READING, {"x": "r" * 1000}, stream="r") for _ in range(20)
        ]
        health = [await outbox.put(Kind.HEALTH, {"x": "h" * 1000}, stream="h") for _ in range(80)]
        stats = outbox.stats()
        assert stats["pending_bytes"] <= 64 * 1024
        rows = rows_in(path)
        assert alert in rows and all(r in rows for r in readings)
        dropped = [s for s in health if s not in rows]
        kept = [s for s in health if s in rows]
        assert dropped and kept and max(dropped) < min(kept)
        gaps = [env["data"] for _, kind, env in rows.values() if kind == "gap"]
        assert sum(g["count"] for g in gaps) == len(dropped) == stats["dropped_quota"]
        assert {g["reason"] for g in gaps} == {"quota"}
        assert {g["priority"] for g in gaps} == {"health"}
        for _, kind, envelope in rows.values():
            if kind == "gap":
                validate("envelope", envelope)
        # Gaps travel with alert priority, ahead of every reading.
        first = await outbox.claim(1 + len(gaps))
        assert [r.kind for r in first] == ["alert"] + ["gap"] * len(gaps)


@pytest.mark.asyncio
async def test_ttl_expiry_is_counted_and_reported(tmp_path: Path) -> None:
    now = [1_000_000.0]
    from edge_agent.config import OutboxConfig
    from edge_agent.health import ComponentHealth
    from edge_agent.outbox import Outbox

    outbox = Outbox(
        tmp_path / "o.sqlite3",
        node="n",
        config=OutboxConfig(ttl_health_s=60, expire_interval_s=0.05),
        health=ComponentHealth("outbox"),
        clock=lambda: now[0],
    )
    async with outbox:
        old = await outbox.put(Kind.HEALTH, {}, stream="h")
        reading = await outbox.put(Kind.READING, {}, stream="r")
        now[0] += 120
        fresh = await outbox.put(Kind.HEALTH, {}, stream="h")
        async with asyncio.timeout(30):
            while outbox.stats()["dropped_ttl"] == 0:
                await outbox.wait_for_rows(0.05)
        rows = await outbox.claim(10)
        seqs = [r.seq for r in rows]
        assert old not in seqs and reading in seqs and fresh in seqs
        (gap,) = [json.loads(r.payload)["data"] for r in rows if r.kind == "gap"]
        assert gap == {
            "reason": "ttl",
            "priority": "health",
            "first_seq": old,
            "last_seq": old,
            "count": 1,
        }


@pytest.mark.asyncio
async def test_run_reports_facts_and_beats(tmp_path: Path) -> None:
    async with make_outbox(tmp_path / "o.sqlite3", stats_interval_s=0.05) as outbox:
        task = asyncio.create_task(outbox.run())
        await outbox.put(Kind.READING, {}, stream="s")
        await eventually(lambda: outbox.health.facts.get("pending_rows") == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        facts = outbox.health.facts
        for key in (
            "pending_rows",
            "pending_bytes",
            "oldest_pending_age_s",
            "dropped_ttl",
            "dropped_quota",
            "dropped_corrupt",
            "write_rate_per_s",
            "ack_rate_per_s",
            "file_bytes",
            "last_error",
        ):
            assert key in facts, key
        assert outbox.health.last_beat is not None


@pytest.mark.asyncio
async def test_wait_for_rows_wakes_on_commit(tmp_path: Path) -> None:
    async with make_outbox(tmp_path / "o.sqlite3") as outbox:
        await outbox.wait_for_rows(0)
        waiter = asyncio.create_task(outbox.wait_for_rows(30))
        await asyncio.sleep(0)
        assert not waiter.done()
        await outbox.put(Kind.READING, {}, stream="s")
        async with asyncio.timeout(30):
            await waiter


@pytest.mark.asyncio
async def test_a_stalled_writer_holds_producers_back_and_recovers(tmp_path: Path) -> None:
    """Another process holds the write lock (a technician's sqlite3 shell, say): producers
    wait in bounded number, the outbox says why, and everything lands once it is let go."""
    import sqlite3

    path = tmp_path / "o.sqlite3"
    async with make_outbox(path, max_queued_puts=8) as outbox:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        puts = [
            asyncio.create_task(outbox.put(Kind.READING, {"i": i}, stream="s")) for i in range(200)
        ]
        await eventually(lambda: outbox.health.state is State.DEGRADED)
        assert "locked" in outbox.health.detail
        assert outbox.stats()["queued_puts"] == 8
        assert not any(p.done() for p in puts)
        blocker.execute("ROLLBACK")
        blocker.close()
        async with asyncio.timeout(60):
            seqs = await asyncio.gather(*puts)
        assert len(set(seqs)) == 200
        assert outbox.health.state is State.OK
        assert outbox.stats()["queued_puts"] == 0
    # The wait is a hole in the observations: reported upstream, with when and why.
    stalls = [e["data"] for _, kind, e in rows_in(path).values() if kind == "alert"]
    assert [s["alert"] for s in stalls] == ["outbox_stalled"]
    assert stalls[0]["cause"] == "write_failing" and "locked" in stalls[0]["detail"]


def _on_tmpfs(path: Path) -> bool:
    best = ("", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) > len(best[0]):
            best = (mount, fstype)
    return best[1] == "tmpfs"


@pytest.mark.asyncio
async def test_stats_report_the_bytes_written_to_the_device(tmp_path: Path) -> None:
    """Bytes per hour and an estimate of flash wear per day, from the kernel's counters of
    the writer thread (all of the outbox's writes happen there)."""
    async with make_outbox(tmp_path / "o.sqlite3", stats_interval_s=0.05) as outbox:
        task = asyncio.create_task(outbox.run())
        for i in range(20):
            await outbox.put(Kind.ALERT, {"alert": "a", "severity": "info", "i": i}, stream="a")
        await eventually(lambda: outbox.health.facts.get("disk_write_bytes_per_hour") is not None)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        facts = outbox.stats()
    per_hour = facts["disk_write_bytes_per_hour"]
    assert facts["flash_wear_gb_per_day"] == round(per_hour * 24 / 1e9, 3)
    if not _on_tmpfs(tmp_path):  # tmpfs has no device: the kernel counts nothing there
        assert facts["disk_write_bytes"] >= 20 * 1024  # twenty fsynced commits at least
        assert facts["disk_write_bytes_per_event"] >= 1024
