"""Which rows the publisher holds: handed out by `claim`, not yet acked or released."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable

from edge_agent.contract import Priority
from edge_agent.outbox.rows import OutboxRow

PRIORITIES = tuple(sorted(int(p) for p in Priority))
_CHUNK = 500
_SELECT = (
    "SELECT seq, priority, ts, kind, stream, payload FROM events"
    " WHERE priority = ? AND seq > ? ORDER BY seq"
)


class ClaimBook:
    """Claimed seqs, and per priority a cursor: the seq below which every row is claimed or
    gone, so that a claim resumes there instead of rescanning. Thread-safe: claims run on
    their own connection and thread, acks on the writer's, `release` on the event loop."""

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
            claimed = self._claimed
            for priority in PRIORITIES:
                want = limit - len(out)
                if want <= 0:
                    break
                low = self._low[priority]
                cursor = db.execute(_SELECT, (priority, low))
                try:
                    while want > 0:
                        # A few extra: after a release, claimed rows may lie past the cursor.
                        batch = cursor.fetchmany(min(_CHUNK, want + 16))
                        if not batch:
                            break
                        fresh = [r for r in batch if r[0] not in claimed] if claimed else batch
                        if len(fresh) > want:
                            fresh = fresh[:want]
                            low = fresh[-1][0]
                        else:
                            low = batch[-1][0]
                        if fresh:
                            claimed.update(dict.fromkeys([r[0] for r in fresh], priority))
                            out.extend(map(OutboxRow._make, fresh))
                            want -= len(fresh)
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
