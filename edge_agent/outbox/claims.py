"""Which rows the publisher holds: handed out by `claim`, not yet acked or released."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable

from edge_agent.contract import Priority
from edge_agent.outbox.rows import OutboxRow

PRIORITIES = tuple(sorted(int(p) for p in Priority))
_CHUNK = 500


class ClaimBook:
    """Claimed seqs, and per priority the seq below which every row is claimed or gone,
    so that a claim never rescans them. Thread-safe: `release` comes from the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed: dict[int, int] = {}
        self._low = dict.fromkeys(PRIORITIES, 0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._claimed)

    def claim(self, db: sqlite3.Connection, limit: int) -> list[OutboxRow]:
        out: list[OutboxRow] = []
        with self._lock:
            for priority in PRIORITIES:
                if len(out) >= limit:
                    break
                low = self._low[priority]
                cursor = db.execute(
                    "SELECT seq, priority, ts, kind, stream, payload FROM events"
                    " WHERE priority = ? AND seq > ? ORDER BY seq",
                    (priority, low),
                )
                try:
                    while len(out) < limit:
                        batch = cursor.fetchmany(min(_CHUNK, limit - len(out) + 16))
                        if not batch:
                            break
                        for row in batch:
                            if len(out) >= limit:
                                break
                            low = row[0]
                            if row[0] not in self._claimed:
                                self._claimed[row[0]] = priority
                                out.append(OutboxRow(*row))
                finally:
                    cursor.close()
                self._low[priority] = low
        return out

    def release(self, seqs: Iterable[int] | None = None) -> None:
        with self._lock:
            if seqs is None:
                self._claimed.clear()
                self._low = dict.fromkeys(PRIORITIES, 0)
                return
            for seq in seqs:
                priority = self._claimed.pop(seq, None)
                if priority is not None:
                    self._low[priority] = min(self._low[priority], seq - 1)

    def forget(self, seqs: Iterable[int]) -> None:
        """Rows acknowledged: gone for good."""
        with self._lock:
            for seq in seqs:
                self._claimed.pop(seq, None)

    def forget_through(self, priority: int, last: int) -> None:
        """Rows of a class dropped up to `last` (TTL, quota, full disk)."""
        with self._lock:
            for seq in [s for s, p in self._claimed.items() if p == priority and s <= last]:
                del self._claimed[seq]
