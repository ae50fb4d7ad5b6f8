"""One stored row per read: the readings of one read share a row, claim() still hands out one
row object per envelope, a row is deleted only once every event in it is acked, and a
restart sends a partly acked row again. Commit windows per class: put() returns after its
commit, alerts commit at once and take waiting readings along."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from edge_agent.contract import Envelope, Kind, reading_data
from tests.outbox.helpers import eventually, make_outbox, rows_in, stored_rows


def _read(n: int, ts: float) -> list[tuple[Kind, dict[str, object], str, float, None]]:
    return [
        (
            Kind.READING,
            reading_data(sensor="plc", quantity=f"reg{i}", value=20.0 + i, unit="Cel"),
            "plc",
            ts,
            None,
        )
        for i in range(n)
    ]


@pytest.mark.asyncio
async def test_the_readings_of_one_read_share_a_row_and_leave_one_envelope_each(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.sqlite3"
    async with make_outbox(path) as outbox:
        ts = 1_700_000_000.0
        seqs = await outbox.put_many(_read(20, ts))
        assert seqs == list(range(seqs[0], seqs[0] + 20))
        # One stored row, smaller than the envelopes it carries (compressed).
        assert stored_rows(path) == {seqs[0]: seqs[-1]}
        stats = outbox.stats()
        assert stats["stored_rows"] == 1 and stats["pending_rows"] == 20
        envelopes = [Envelope.from_dict(env) for _, _, env in rows_in(path).values()]
        assert stats["pending_bytes"] < sum(len(e.encode()) for e in envelopes) / 4

        rows = await outbox.claim(7)
        assert [r.seq for r in rows] == seqs[:7]
        for row, i in zip(rows, range(7), strict=True):
            envelope = Envelope.decode(row.payload)
            assert envelope.key == ("node-1", outbox.epoch, seqs[i])
            assert envelope.data["quantity"] == f"reg{i}" and envelope.ts == ts
            assert (row.stream, row.kind) == ("plc", "reading")
        rest = await outbox.claim(100)
        assert [r.seq for r in rest] == seqs[7:]

        await outbox.ack(seqs[:19])
        # One event of the row is still unacked: the row stays, and its acked events are
        # not handed out again in this run.
        assert stored_rows(path) == {seqs[0]: seqs[-1]}
        assert outbox.stats()["pending_rows"] == 20
        outbox.release()
        assert [r.seq for r in await outbox.claim(100)] == [seqs[-1]]
        await outbox.ack([seqs[-1]])
        assert stored_rows(path) == {}
        assert outbox.stats()["pending_rows"] == 0
        assert outbox.stats()["acked"] == 20


@pytest.mark.asyncio
async def test_a_partly_acked_row_is_sent_again_whole_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    async with make_outbox(path) as outbox:
        seqs = await outbox.put_many(_read(5, time.time()))
        await outbox.claim(5)
        await outbox.ack(seqs[:3])
    async with make_outbox(path) as outbox:
        # At-least-once: the IOC drops the three it has by (node, epoch, seq).
        assert [r.seq for r in await outbox.claim(10)] == seqs
        await outbox.ack(seqs)
        assert stored_rows(path) == {}


@pytest.mark.asyncio
async def test_rows_of_different_reads_classes_and_streams_stay_apart(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    async with make_outbox(path, row_max_events=8) as outbox:
        now = time.time()
        results = await asyncio.gather(
            outbox.put_many(_read(20, now)),  # 20 readings: rows of 8, 8 and 4
            outbox.put_many(_read(3, now + 1)),  # another read of the same sensor
            outbox.put(Kind.DETECTION, {"i": 1}, stream="plc", ts=now),
            outbox.put(Kind.DETECTION, {"i": 2}, stream="plc", ts=now),
        )
        sizes = sorted(last - first + 1 for first, last in stored_rows(path).items())
        assert sizes == [1, 1, 3, 4, 8, 8]
        read = results[0]
        assert isinstance(read, list) and read == sorted(read)


@pytest.mark.asyncio
async def test_an_alert_commits_at_once_and_takes_waiting_readings_along(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    # A reading waits up to a minute for company; the test's timeout guards a hang only.
    async with make_outbox(path, commit_window_reading_ms=5000) as outbox:
        reading = asyncio.create_task(outbox.put(Kind.READING, {"v": 1}, stream="r"))
        await eventually(lambda: outbox.stats()["queued_puts"] == 1)
        alert = await outbox.put(Kind.ALERT, {"alert": "x", "severity": "info"}, stream="a")
        # Both were in the alert's transaction: the reading is in the file already.
        assert set(rows_in(path)) == {alert - 1, alert}
        assert await reading == alert - 1


@pytest.mark.asyncio
async def test_put_returns_only_after_its_commit_with_a_long_window(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    async with make_outbox(path, commit_window_reading_ms=300, ack_window_ms=300) as outbox:
        before = outbox.stats()["transactions"]
        seqs = await asyncio.gather(
            *(outbox.put(Kind.READING, {"i": i}, stream="r") for i in range(50))
        )
        # A fresh connection sees every one of them: committed before put() returned.
        assert set(seqs) <= set(rows_in(path))
        rows = await outbox.claim(50)
        await outbox.ack([r.seq for r in rows])
        assert not rows_in(path)  # ack() too returns only after the delete is committed
        assert outbox.stats()["transactions"] - before == 2  # one for the puts, one for acks


@pytest.mark.asyncio
async def test_a_damaged_row_is_dropped_and_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    async with make_outbox(path) as outbox:
        bad = await outbox.put_many(_read(20, time.time()))
        good = await outbox.put(Kind.READING, {"v": 1}, stream="r")
        conn = sqlite3.connect(path)
        conn.execute("UPDATE events SET payload = X'28b52ffd00' WHERE seq = ?", (bad[0],))
        conn.commit()
        conn.close()
        assert [r.seq for r in await outbox.claim(100)] == [good]
        await outbox.ack([good])  # the next transaction drops the damaged row
        rows = await outbox.claim(100)
    (gap,) = [Envelope.decode(r.payload).data for r in rows if r.kind == "gap"]
    assert gap == {
        "reason": "corrupt",
        "priority": "reading",
        "first_seq": bad[0],
        "last_seq": bad[-1],
        "count": 20,
    }


@pytest.mark.asyncio
async def test_a_fast_poller_keeps_its_pace_under_a_long_reading_window(tmp_path: Path) -> None:
    """A poller awaits its read's commit; the window never holds a read longer than a
    quarter of the interval between that sensor's reads. With a 5 s window taken whole,
    the 40 reads below would need 200 s; the guard is a fraction of that."""
    async with make_outbox(tmp_path / "o.sqlite3", commit_window_reading_ms=5000) as outbox:
        async with asyncio.timeout(30):
            for _ in range(40):
                ts = time.time()
                await asyncio.gather(
                    *(outbox.put(Kind.READING, {"q": q}, stream="fast", ts=ts) for q in range(5))
                )
                await asyncio.sleep(0.02)
        # Each read was committed alone: the window did not gather reads of one sensor.
        assert outbox.stats()["stored_rows"] == 40
