"""The outbox's counters, committed with the rows they count (the `totals` table), so that
stats and quota checks are O(1) and a crash leaves rows and counts agreeing."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence

from edge_agent.outbox.rows import StoredRow

REASONS = ("ttl", "quota", "corrupt", "disk_full")
COUNTERS = (
    "pending_rows",  # events waiting (several may share a stored row)
    "pending_bytes",  # their bytes as stored
    "stored_rows",
    "written",
    "acked",
    "last_seq",  # the highest seq ever committed in this file
    *(f"dropped_{r}" for r in REASONS),
)


class Totals:
    """Written by the writer thread inside its transactions; read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTERS, 0)

    def load(self, db: sqlite3.Connection) -> None:
        values = dict.fromkeys(COUNTERS, 0)
        values.update({str(k): int(v) for k, v in db.execute("SELECT name, value FROM totals")})
        with self._lock:
            self._values = values

    def save(self, db: sqlite3.Connection) -> None:
        db.executemany("INSERT OR REPLACE INTO totals VALUES (?, ?)", self.snapshot().items())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def restore(self, values: dict[str, int]) -> None:
        with self._lock:
            self._values = dict(values)

    def get(self, name: str) -> int:
        with self._lock:
            return self._values[name]

    @property
    def last_seq(self) -> int:
        return self.get("last_seq")

    def skip_to(self, last_seq: int) -> None:
        """Seqs up to `last_seq` count as used (a new epoch continues above them)."""
        with self._lock:
            self._values["last_seq"] = max(self._values["last_seq"], last_seq)

    def add(self, name: str, amount: int) -> None:
        with self._lock:
            self._values[name] += amount

    def inserted(self, events: int, rows: int, size: int, last_seq: int) -> None:
        with self._lock:
            v = self._values
            v["pending_rows"] += events
            v["pending_bytes"] += size
            v["stored_rows"] += rows
            v["written"] += events
            v["last_seq"] = last_seq

    def removed(self, rows: Sequence[StoredRow], counter: str, *, acked: int = 0) -> int:
        """Rows deleted (`acked`) or dropped (`dropped_<reason>`), of whose events `acked`
        were delivered already; returns the events counted under `counter`."""
        events = sum(r.count for r in rows)
        with self._lock:
            v = self._values
            v["pending_rows"] -= events
            v["pending_bytes"] -= sum(r.size for r in rows)
            v["stored_rows"] -= len(rows)
            v["acked"] += acked
            v[counter] += events - acked
        return events - acked
