"""The derive component's own small SQLite file (`state_dir/derive.sqlite3`): closed hourly
means, the open hour's sums, the last closed hour and the active limit alerts. Not the
outbox's database: that one belongs to the outbox alone."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import StorageError
from edge_agent.sqlite import atomic

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS hourly (
    sensor TEXT NOT NULL, quantity TEXT NOT NULL, hour_end INTEGER NOT NULL,
    mean REAL NOT NULL, unit TEXT NOT NULL,
    PRIMARY KEY (sensor, quantity, hour_end)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS open_sums (
    sensor TEXT NOT NULL, quantity TEXT NOT NULL, hour_end INTEGER NOT NULL,
    total REAL NOT NULL, count INTEGER NOT NULL, unit TEXT NOT NULL,
    PRIMARY KEY (sensor, quantity, hour_end)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    sensor TEXT NOT NULL, quantity TEXT NOT NULL, period TEXT NOT NULL,
    since REAL NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (sensor, quantity, period)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
"""

HourRow = tuple[str, str, int, float, str]
SumRow = tuple[str, str, int, float, int, str]
AlertRow = tuple[str, str, str, float, float]  # sensor, quantity, period, since, value


@dataclass(frozen=True)
class Saved:
    last_closed: int | None
    hourly: list[HourRow]
    open_sums: list[SumRow]
    alerts: list[AlertRow]


class DeriveStore:
    """Blocking; the component calls it from a worker thread, one call at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            # Derived state can be rebuilt from new readings; never let it stop the agent,
            # and never delete it: move it aside for whoever wants to look.
            aside = self.path.with_name(
                f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            )
            log.error("derive state %s is damaged (%s); moved to %s", self.path, exc, aside)
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            try:
                return self._connect()
            except sqlite3.Error as again:
                raise StorageError(f"cannot open derive state {self.path}: {again}") from again
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open derive state {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # Losing the last save to a power cut costs minutes of one hour, never the file.
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, atomic(self._conn) as conn:
            yield conn

    def load(self) -> Saved:
        try:
            with self._transaction() as conn:
                row = conn.execute("SELECT value FROM meta WHERE key='last_closed'").fetchone()
                return Saved(
                    last_closed=None if row is None else int(row[0]),
                    hourly=[
                        (str(s), str(q), int(h), float(m), str(u))
                        for s, q, h, m, u in conn.execute(
                            "SELECT sensor, quantity, hour_end, mean, unit FROM hourly"
                        )
                    ],
                    open_sums=[
                        (str(s), str(q), int(h), float(t), int(c), str(u))
                        for s, q, h, t, c, u in conn.execute(
                            "SELECT sensor, quantity, hour_end, total, count, unit FROM open_sums"
                        )
                    ],
                    alerts=[
                        (str(s), str(q), str(p), float(since), float(v))
                        for s, q, p, since, v in conn.execute(
                            "SELECT sensor, quantity, period, since, value FROM alerts"
                        )
                    ],
                )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read derive state {self.path}: {exc}") from exc

    def save_close(
        self,
        hour_end: int,
        hourly: Iterable[HourRow],
        alerts: Iterable[AlertRow],
        *,
        keep_after: int,
    ) -> None:
        """One transaction per closed hour: its means, the alerts now active, the marker."""
        try:
            with self._transaction() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO hourly VALUES (?, ?, ?, ?, ?)", list(hourly)
                )
                conn.execute("DELETE FROM hourly WHERE hour_end <= ?", (keep_after,))
                conn.execute("DELETE FROM open_sums WHERE hour_end <= ?", (hour_end,))
                conn.execute("DELETE FROM alerts")
                conn.executemany("INSERT INTO alerts VALUES (?, ?, ?, ?, ?)", list(alerts))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_closed', ?)", (hour_end,))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write derive state {self.path}: {exc}") from exc

    def save_open(self, sums: Iterable[SumRow]) -> None:
        try:
            with self._transaction() as conn:
                conn.execute("DELETE FROM open_sums")
                conn.executemany("INSERT INTO open_sums VALUES (?, ?, ?, ?, ?, ?)", list(sums))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write derive state {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()
