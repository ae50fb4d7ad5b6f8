"""A full disk: the outbox does not crash or corrupt its file, reports degraded with the
reason, makes room by the eviction policy (counted, reported as gaps), keeps producers
waiting rather than queueing without bound, and recovers by itself when space returns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.contract import Kind
from edge_agent.health import State
from tests.conftest import IN_CI
from tests.outbox.helpers import eventually, gap_covers, integrity, make_outbox, rows_in
from tests.sync.schema import validate

FS_BYTES = 4 * 1024 * 1024


@contextlib.contextmanager
def small_filesystem(directory: Path) -> Iterator[bool]:
    """A 4 MiB tmpfs at `directory`; False where mounting is not allowed (no CAP_SYS_ADMIN)."""
    directory.mkdir()
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        yield False
        return
    result = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def _fill(directory: Path, leave: int) -> Path:
    filler = directory / "filler"
    free = shutil.disk_usage(directory).free
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def assert_evicted_with_gaps(path: Path, committed: list[int], alert: int) -> None:
    """The file is sound, the alert kept, and every committed row is there or counted in a
    `disk_full` gap."""
    assert integrity(path) == "ok"
    rows = rows_in(path)
    assert alert in rows
    gaps = [env["data"] for _, kind, env in rows.values() if kind == "gap"]
    assert gaps and {g["reason"] for g in gaps} == {"disk_full"}
    for seq in committed:
        assert seq in rows or gap_covers(gaps, seq), f"row {seq} lost without a gap"
    assert sum(g["count"] for g in gaps) == len([s for s in committed if s not in rows])


@pytest.mark.asyncio
async def test_disk_full_degrades_and_recovers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with small_filesystem(state) as mounted:
        path = state / "outbox.sqlite3"
        # Where mount is refused (an unprivileged container), SQLite's max_page_count makes
        # the same SQLITE_FULL the writer sees on a full disk, and a larger cap is the space
        # coming back.
        limit = None if mounted else 1024 * 1024
        outbox = make_outbox(
            path,
            max_file_bytes=limit,
            max_queued_puts=64,
            disk_reserve_bytes=256 * 1024,
            commit_window_reading_ms=5,
        )
        committed: list[int] = []
        seen: set[State] = set()
        details: set[str] = set()

        async def watch() -> None:
            while True:
                seen.add(outbox.health.state)
                details.add(outbox.health.detail)
                await asyncio.sleep(0.002)

        async with outbox:
            # Another program takes the last byte at once: what the ballast is for.
            filler = _fill(state, 0) if mounted else None
            watcher = asyncio.create_task(watch())
            async with asyncio.timeout(120):
                while outbox.stats()["dropped_disk_full"] == 0 or State.DEGRADED not in seen:
                    committed.append(
                        await outbox.put(Kind.READING, {"pad": "x" * 1000}, stream="s")
                    )
            assert any(d.startswith("disk full") for d in details), details
            assert "full" in outbox.health.last_error
            assert outbox.health.counters["write_errors"] >= 1
            # Even mid-trouble the file is sound for any reader.
            assert integrity(path) == "ok"
            # Alerts are never evicted to make room for readings.
            alert = await outbox.put(Kind.ALERT, {"a": 1}, stream="a")

            if filler is not None:
                filler.unlink()
                dropped = outbox.stats()["dropped_disk_full"]
                for _ in range(300):
                    committed.append(
                        await outbox.put(Kind.READING, {"pad": "y" * 1000}, stream="s")
                    )
                await eventually(lambda: outbox.health.state is State.OK)
                assert outbox.stats()["dropped_disk_full"] == dropped
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

        if filler is None:
            # Space returns: the same file under a larger cap takes writes again.
            async with make_outbox(path, max_file_bytes=64 * 1024 * 1024) as outbox:
                for _ in range(300):
                    committed.append(
                        await outbox.put(Kind.READING, {"pad": "y" * 1000}, stream="s")
                    )
                assert outbox.health.state is State.OK

        assert_evicted_with_gaps(path, committed, alert)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "settings",
    # A 4 MiB filesystem holds no 4 MiB WAL: the outbox would stop growing at once.
    [{"disk_reserve_bytes": 0, "checkpoint_pages": 128}, {}],
    ids=["reserve_off", "default_reserve_does_not_fit"],
)
async def test_a_full_disk_without_a_reserve_still_evicts_and_reports(
    tmp_path: Path, settings: dict[str, int]
) -> None:
    """No ballast (turned off, or the default one never fitted on a small filesystem): the
    outbox still makes room by the eviction policy and reports every drop as a gap, so the
    producers never stop: there is no hole in the observations."""
    state = tmp_path / "state"
    with small_filesystem(state) as mounted:
        path = state / "outbox.sqlite3"
        limit = None if mounted else 1024 * 1024
        outbox = make_outbox(
            path, max_file_bytes=limit, max_queued_puts=64, commit_window_reading_ms=5, **settings
        )
        committed: list[int] = []
        async with outbox:
            reserve = path.with_name(path.name + ".reserve")
            if settings:
                assert outbox.health.state is State.OK
            elif mounted:
                # 4 MiB of ballast cannot fit on a 4 MiB filesystem: said, not hidden.
                assert not reserve.exists()
                assert outbox.health.state is State.DEGRADED
                assert outbox.health.reason is not None
                assert outbox.health.reason.code == "no_disk_reserve"
            if mounted:
                _fill(state, 600 * 1024)
            async with asyncio.timeout(120):
                while outbox.stats()["dropped_disk_full"] == 0:
                    committed.append(
                        await outbox.put(Kind.READING, {"pad": "x" * 1000}, stream="s")
                    )
                # The disk stays full, and readings keep being committed all the same.
                for _ in range(300):
                    committed.append(
                        await outbox.put(Kind.READING, {"pad": "z" * 1000}, stream="s")
                    )
            assert outbox.health.state is State.DEGRADED
            assert outbox.health.detail.startswith("disk full"), outbox.health.detail
            alert = await outbox.put(Kind.ALERT, {"a": 1}, stream="a")
        assert_evicted_with_gaps(path, committed, alert)


@pytest.mark.asyncio
async def test_a_disk_filled_at_once_without_a_reserve_reports_the_stall(tmp_path: Path) -> None:
    """Without ballast, a disk that another program fills to the last byte at once can hold
    writes until space returns; the wait is then reported upstream, never silent."""
    state = tmp_path / "state"
    with small_filesystem(state) as mounted:
        if not mounted:
            message = "needs a small filesystem of its own, and mount is refused here"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        path = state / "outbox.sqlite3"
        async with make_outbox(path, disk_reserve_bytes=0, checkpoint_pages=128) as outbox:
            for i in range(20):
                await outbox.put(Kind.READING, {"i": i, "pad": "x" * 1000}, stream="s")
            # A WAL emptied to zero bytes (as after a start) has no room of its own left.
            other = sqlite3.connect(path)
            assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            other.close()
            filler = _fill(state, 0)
            seqs: list[int] = []

            async def produce() -> None:
                while True:
                    seqs.append(await outbox.put(Kind.READING, {"pad": "w" * 1000}, stream="s"))

            producer = asyncio.create_task(produce())
            await eventually(lambda: outbox.health.counters.get("write_errors", 0) >= 2)
            assert outbox.health.detail == "disk full"
            assert outbox.stats()["queued_puts"] == 1 and not seqs  # the producer waits
            filler.unlink()
            await eventually(lambda: len(seqs) >= 2)
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        rows = rows_in(path)
        assert set(seqs) <= set(rows)
        (envelope,) = [e for _, kind, e in rows.values() if kind == "alert"]
        validate("envelope", envelope)
        stall = envelope["data"]
        assert stall["alert"] == "outbox_stalled"
        assert stall["cause"] == "disk_full"
        assert stall["from"] < stall["to"] and stall["duration_s"] > 0
