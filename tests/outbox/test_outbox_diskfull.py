"""A full disk: the outbox does not crash or corrupt its file, reports degraded with the
reason, makes room by the eviction policy (counted, reported as gaps), keeps producers
waiting rather than queueing without bound, and recovers by itself when space returns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.contract import Kind
from edge_agent.health import State
from tests.outbox.helpers import eventually, gap_covers, integrity, make_outbox, rows_in

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
            path, max_file_bytes=limit, max_queued_puts=64, disk_reserve_bytes=256 * 1024
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
            filler = _fill(state, 600 * 1024) if mounted else None
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

        assert integrity(path) == "ok"
        rows = rows_in(path)
        assert alert in rows
        gaps = [env["data"] for _, kind, env in rows.values() if kind == "gap"]
        assert gaps and {g["reason"] for g in gaps} == {"disk_full"}
        for seq in committed:
            assert seq in rows or gap_covers(gaps, seq), f"row {seq} lost without a gap"
        assert sum(g["count"] for g in gaps) == len([s for s in committed if s not in rows])
