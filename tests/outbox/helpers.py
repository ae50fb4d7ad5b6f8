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


def make_outbox(path: Path, **config: Any) -> Outbox:
    return Outbox(
        path,
        node="node-1",
        config=OutboxConfig(**config),
        health=ComponentHealth("outbox", kind="outbox"),
    )


def rows_in(path: Path) -> dict[int, tuple[int, str, dict[str, Any]]]:
    """seq -> (priority, kind, envelope) of every row in the file, read with a fresh connection."""
    conn = sqlite3.connect(path)
    try:
        return {
            seq: (priority, kind, json.loads(payload))
            for seq, priority, kind, payload in conn.execute(
                "SELECT seq, priority, kind, payload FROM events"
            )
        }
    finally:
        conn.close()


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
