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
    """Changed by the writer thread inside its transactions, where it sees its own changes;
    every other reader sees only what is committed (`committed()`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTERS, 0)
        self._open: dict[str, int] | None = None  # the open transaction's values

    def load(self, db: sqlite3.Connection) -> None:
        values = dict.fromkeys(COUNTERS, 0)
        values.update({str(k): int(v) for k, v in db.execute("SELECT name, value FROM totals")})
        with self._lock:
            self._values = values

    def begin(self) -> None:
        with self._lock:
            self._open = dict(self._values)

    def save(self, db: sqlite3.Connection) -> None:
        """Write the open transaction's values (inside it)."""
        with self._lock:
            items = list(self._current().items())
        db.executemany("INSERT OR REPLACE INTO totals VALUES (?, ?)", items)

    def commit(self) -> None:
        with self._lock:
            if self._open is not None:
                self._values, self._open = self._open, None

    def rollback(self) -> None:
        with self._lock:
            self._open = None

    def committed(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def get(self, name: str) -> int:
        """The writer's view: its open transaction's value, else the committed one."""
        with self._lock:
            return self._current()[name]

    @property
    def last_seq(self) -> int:
        return self.get("last_seq")

    def skip_to(self, last_seq: int) -> None:
        """Seqs up to `last_seq` count as used (a new epoch continues above them)."""
        with self._lock:
            values = self._current()
            values["last_seq"] = max(values["last_seq"], last_seq)

    def add(self, name: str, amount: int) -> None:
        with self._lock:
            self._current()[name] += amount

    def inserted(self, events: int, rows: int, size: int, last_seq: int) -> None:
        with self._lock:
            v = self._current()
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
            v = self._current()
            v["pending_rows"] -= events
            v["pending_bytes"] -= sum(r.size for r in rows)
            v["stored_rows"] -= len(rows)
            v["acked"] += acked
            v[counter] += events - acked
        return events - acked

    def _current(self) -> dict[str, int]:
        return self._values if self._open is None else self._open
