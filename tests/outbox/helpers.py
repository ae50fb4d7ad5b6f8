"""Shared pieces of the outbox tests: opening outboxes and reading their files directly."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.config import OutboxConfig
from edge_agent.health import ComponentHealth
from edge_agent.outbox import Outbox
from edge_agent.outbox.packing import unpack


def make_outbox(path: Path, *, boot: str | None = None, **config: Any) -> Outbox:
    """An outbox on `path`; `boot` stands in for the kernel's boot id (a reboot since)."""
    extra: dict[str, Any] = {} if boot is None else {"boot": lambda: boot}
    return Outbox(
        path,
        node="node-1",
        config=OutboxConfig(**config),
        health=ComponentHealth("outbox", kind="outbox"),
        **extra,
    )


def rows_in(path: Path) -> dict[int, tuple[int, str, dict[str, Any]]]:
    """seq -> (priority, kind, envelope) of every event in the file (rows that carry several
    unpacked), read with a fresh connection."""
    return {seq: (priority, kind, json.loads(body)) for seq, priority, kind, body in _events(path)}


def stored_rows(path: Path) -> dict[int, int]:
    """First seq -> last seq of every stored row."""
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT seq, last_seq FROM events"))
    finally:
        conn.close()


def _events(path: Path) -> list[tuple[int, int, str, bytes]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT seq, last_seq, priority, kind, payload FROM events").fetchall()
    finally:
        conn.close()
    return [
        (seq + i, priority, kind, body)
        for seq, last_seq, priority, kind, payload in rows
        for i, body in enumerate(unpack(payload, last_seq - seq + 1))
    ]


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def gap_covers(gaps: list[dict[str, Any]], seq: int) -> dict[str, Any] | None:
    for gap in gaps:
        first, last = gap.get("first_seq"), gap.get("last_seq")
        if first is not None and last is not None and first <= seq <= last:
            return gap
    return None


async def eventually(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Wait until `predicate()` holds; the timeout only guards against a hang."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def quarantined_files(directory: Path) -> list[Path]:
    """The moved-aside databases (without their -wal/-shm companions)."""
    return [
        p
        for p in directory.glob("outbox.sqlite3.corrupt-*")
        if not p.name.endswith(("-wal", "-shm"))
    ]


def drop_last_commits(wal: Path, commits: int) -> int:
    """Cut the last `commits` transactions off a WAL file, as a power cut does to frames
    that never reached the disk (synchronous=NORMAL, or storage that lies about fsync).

    Walks the frames of the current WAL generation (those carrying the header's salt),
    truncates the file just after the commit frame `commits` from the end and removes the
    shared-memory index, which a reboot would not keep either. Returns the commits cut."""
    data = wal.read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    salt = data[16:24]
    frame = 24 + page_size
    ends: list[int] = []
    offset = 32
    while offset + frame <= len(data) and data[offset + 8 : offset + 16] == salt:
        if int.from_bytes(data[offset + 4 : offset + 8], "big"):  # size after commit: a commit
            ends.append(offset + frame)
        offset += frame
    if len(ends) <= commits:
        raise AssertionError(f"the WAL holds only {len(ends)} commits")
    with wal.open("r+b") as handle:
        handle.truncate(ends[-commits - 1])
    wal.with_name(wal.name.replace("-wal", "-shm")).unlink(missing_ok=True)
    return commits
