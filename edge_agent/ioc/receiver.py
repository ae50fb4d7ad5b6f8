"""Reference receiver for the provincial side: store every event once, report gaps.

Subscribes to `{prefix}/+/+/data/#` and `{prefix}/+/+/status`, decodes single envelopes and
batches, and inserts into SQLite keyed by `(node, epoch, seq)`, so redelivered events are
counted as duplicates and dropped. A starting point for the IOC, and the peer of our tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from edge_agent.backoff import Backoff
from edge_agent.contract import ContractError, decode_data
from edge_agent.errors import SyncError
from edge_agent.sync.link import Link, LinkOptions, Message

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    node TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,
    ts REAL NOT NULL, kind TEXT NOT NULL, topic TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (node, epoch, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS node_status (
    topic TEXT PRIMARY KEY, payload TEXT NOT NULL, received REAL NOT NULL
);
"""


class Receiver:
    """Dedupe-by-key store. `handle()` takes any message from the subscriptions."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.received = 0
        self.duplicates = 0
        self.invalid = 0
        self.messages = 0
        self.status: dict[str, dict[str, Any]] = {}

    def handle(self, message: Message) -> None:
        self.messages += 1
        if message.topic.endswith("/status"):
            self._status(message)
            return
        try:
            envelopes = decode_data(message.topic, message.payload)
        except ContractError as exc:
            self.invalid += 1
            log.warning("invalid message on %s: %s", message.topic, exc)
            return
        rows = [
            (e.node, e.epoch, e.seq, e.ts, e.kind, message.topic, json.dumps(e.data))
            for e in envelopes
        ]
        before = self.db.total_changes
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self.db.execute("COMMIT")
        inserted = self.db.total_changes - before
        self.received += len(rows)
        self.duplicates += len(rows) - inserted

    def _status(self, message: Message) -> None:
        if not message.payload:
            return
        try:
            payload = json.loads(message.payload)
        except ValueError:
            self.invalid += 1
            return
        self.status[message.topic] = payload
        self.db.execute(
            "INSERT OR REPLACE INTO node_status VALUES (?, ?, julianday('now'))",
            (message.topic, message.payload.decode("utf-8", "replace")),
        )

    def count(self, node: str | None = None) -> int:
        if node is None:
            return int(self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        return int(
            self.db.execute("SELECT COUNT(*) FROM events WHERE node=?", (node,)).fetchone()[0]
        )

    def seqs(self, node: str, epoch: str) -> list[int]:
        rows = self.db.execute(
            "SELECT seq FROM events WHERE node=? AND epoch=? ORDER BY seq", (node, epoch)
        )
        return [int(r[0]) for r in rows]

    def gaps(self) -> dict[tuple[str, str], list[tuple[int, int]]]:
        """Missing seq ranges `(first, last)` per (node, epoch), between the lowest and highest
        seq seen (rows the node dropped on purpose arrive as `gap` events, not as holes)."""
        result: dict[tuple[str, str], list[tuple[int, int]]] = {}
        query = """
            SELECT node, epoch, seq + 1, next - 1 FROM (
                SELECT node, epoch, seq,
                       LEAD(seq) OVER (PARTITION BY node, epoch ORDER BY seq) AS next
                FROM events)
            WHERE next > seq + 1
        """
        for node, epoch, first, last in self.db.execute(query):
            result.setdefault((node, epoch), []).append((int(first), int(last)))
        return result

    def close(self) -> None:
        self.db.close()


def subscriptions(prefix: str) -> list[str]:
    return [f"{prefix}/+/+/data/#", f"{prefix}/+/+/status"]


async def receive(options: LinkOptions, receiver: Receiver, *, prefix: str) -> None:
    """Receive until cancelled, reconnecting after a lost link."""
    retry = Backoff(1.0, 30.0)
    while True:
        try:
            async with Link(options, on_message=receiver.handle) as link:
                for topic_filter in subscriptions(prefix):
                    await link.subscribe(topic_filter, qos=1)
                log.info("receiving from %s:%d", options.host, options.port)
                retry.reset()
                closed = await link.closed
            log.warning("link lost: %s", closed.reason)
        except SyncError as exc:
            log.warning("cannot receive: %s", exc)
        await asyncio.sleep(retry.next())
