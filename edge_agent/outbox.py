"""SQLite store-and-forward: every event is committed here before anything sends it.

Write first, drain with a cursor, delete only on acknowledgement. One writer thread owns
the connection; producers await `put()`, which returns once the row is committed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.config import OutboxConfig
from edge_agent.contract import PRIORITY_OF_KIND, Envelope, Kind, Priority
from edge_agent.errors import StorageError
from edge_agent.health import ComponentHealth, State

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    priority INTEGER NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    stream TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_drain ON events (priority, seq);
"""


@dataclass(frozen=True)
class OutboxRow:
    """One pending event: `payload` is the encoded envelope, ready to publish."""

    seq: int
    priority: int
    ts: float
    kind: str
    stream: str
    payload: bytes


class Outbox:
    """The durable queue between producers and the publisher."""

    name = "outbox"

    def __init__(
        self, path: Path, *, node: str, config: OutboxConfig, health: ComponentHealth
    ) -> None:
        self.path = path
        self.node = node
        self.config = config
        self.health = health
        self.epoch = ""
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._claimed: set[int] = set()
        self._new_rows = asyncio.Event()

    async def __aenter__(self) -> Outbox:
        await asyncio.to_thread(self._open)
        self.health.set_state(State.OK, f"epoch {self.epoch}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self.health.set_state(State.STOPPED)

    async def run(self) -> None:
        while True:
            self.health.set_facts(**await asyncio.to_thread(self.stats))
            await asyncio.sleep(5)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.config.synchronous}")
            conn.executescript(SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            if row is None:
                self.epoch = secrets.token_hex(8)
                conn.execute("INSERT INTO meta VALUES ('epoch', ?)", (self.epoch,))
            else:
                self.epoch = row[0]
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open outbox {self.path}: {exc}") from exc
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("outbox is closed")
        return self._conn

    def _insert(self, kind: str, stream: str, ts: float, data: dict[str, Any], prio: int) -> int:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                seq = db.execute(
                    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name='events'), 0) + 1"
                ).fetchone()[0]
                payload = Envelope(self.node, self.epoch, seq, ts, kind, data).encode()
                db.execute(
                    "INSERT INTO events (seq, priority, ts, kind, stream, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, prio, ts, kind, stream, payload),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return int(seq)

    async def put(
        self,
        kind: Kind | str,
        data: dict[str, Any],
        *,
        stream: str,
        ts: float | None = None,
        priority: Priority | None = None,
    ) -> int:
        """Commit one event; returns its seq once it is durable."""
        if priority is None:
            priority = PRIORITY_OF_KIND.get(Kind(kind), Priority.EVENT)
        seq = await asyncio.to_thread(
            self._insert, str(kind), stream, time.time() if ts is None else ts, data, int(priority)
        )
        self.health.progress("written")
        self._new_rows.set()
        return seq

    def _select(self, limit: int) -> list[OutboxRow]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT seq, priority, ts, kind, stream, payload FROM events"
                    " ORDER BY priority, seq LIMIT ?",
                    (limit + len(self._claimed),),
                )
                .fetchall()
            )
            out = [OutboxRow(*r) for r in rows if r[0] not in self._claimed][:limit]
            self._claimed.update(r.seq for r in out)
            return out

    async def claim(self, limit: int) -> list[OutboxRow]:
        """The oldest pending rows in (priority, seq) order not already claimed."""
        return await asyncio.to_thread(self._select, limit)

    def release(self, seqs: Sequence[int] | None = None) -> None:
        """Give claimed rows back (link lost before their ack): they will be claimed again."""
        if seqs is None:
            self._claimed.clear()
        else:
            self._claimed.difference_update(seqs)

    def _delete(self, seqs: Sequence[int]) -> None:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in seqs])
            db.execute("COMMIT")
            self._claimed.difference_update(seqs)

    async def ack(self, seqs: Sequence[int]) -> None:
        """Delete rows the broker has confirmed."""
        if seqs:
            await asyncio.to_thread(self._delete, seqs)
            self.health.count("acked", len(seqs))

    async def wait_for_rows(self, timeout: float | None = None) -> None:
        """Return when a row was committed since the last call (or after `timeout`)."""
        try:
            async with asyncio.timeout(timeout):
                await self._new_rows.wait()
        except TimeoutError:
            return
        self._new_rows.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            db = self._db()
            count, size, oldest = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(ts) FROM events"
            ).fetchone()
        return {
            "epoch": self.epoch,
            "pending_rows": count,
            "pending_bytes": size,
            "oldest_pending_age_s": None if oldest is None else max(0.0, time.time() - oldest),
        }
