"""The receiver's SQLite store: one file, WAL, group commits, holes computed in SQL."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.contract import parse_iso, utc_iso
from edge_agent.errors import StorageError
from edge_agent.ioc import holes
from edge_agent.ioc.holes import Range, SequenceState, TrackedHole
from edge_agent.ioc.intake import DataMessage, StatusMessage
from edge_agent.ioc.sqlite_schema import MIGRATIONS
from edge_agent.ioc.store import HoleReport, WriteResult, normal_time, status_row, summarize
from edge_agent.sqlite import atomic

INSERT_READINGS = "INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_EVENTS = "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

UPSERT_SEQUENCE = """
INSERT INTO sequences (node, epoch, first_received_at, last_received_at, max_seq)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (node, epoch) DO UPDATE SET
    last_received_at = excluded.last_received_at,
    max_seq = max(sequences.max_seq, excluded.max_seq),
    version = sequences.version + 1
"""

TOUCH_NODE = """
INSERT INTO nodes (node, district, last_event_ts, last_event_received_at) VALUES (?, ?, ?, ?)
ON CONFLICT (node) DO UPDATE SET
    last_event_received_at = excluded.last_event_received_at,
    last_event_ts = CASE WHEN nodes.last_event_ts IS NULL
                          OR excluded.last_event_ts > nodes.last_event_ts
                         THEN excluded.last_event_ts ELSE nodes.last_event_ts END
"""

STATUS_HISTORY = """
INSERT OR IGNORE INTO node_status (node, district, state, reason, ts, since, received_at,
    version, config_hash, epoch, last_seq, pending_rows, area_code, area_name, retained)
VALUES (:node, :district, :state, :reason, :ts, :since, :now, :version, :config_hash, :epoch,
    :last_seq, :pending_rows, :area_code, :area_name, :retained)
"""

# A birth says everything about the node; an offline status (will or clean) only the state.
STATUS_ONLINE = """
INSERT INTO nodes (node, district, area_code, area_name, state, state_since, status_ts,
    version, config_hash, epoch, last_seq_reported, pending_rows, pending_reported_at)
VALUES (:node, :district, :area_code, :area_name, :state, :since, :ts, :version,
    :config_hash, :epoch, :last_seq, :pending_rows, :ts)
ON CONFLICT (node) DO UPDATE SET
    district = excluded.district, area_code = excluded.area_code,
    area_name = excluded.area_name,
    state_since = CASE WHEN nodes.state IS excluded.state THEN nodes.state_since
                       ELSE excluded.state_since END,
    state = excluded.state, status_ts = excluded.status_ts, version = excluded.version,
    config_hash = excluded.config_hash, epoch = excluded.epoch,
    last_seq_reported = excluded.last_seq_reported, pending_rows = excluded.pending_rows,
    pending_reported_at = excluded.pending_reported_at
"""

STATUS_OFFLINE = """
INSERT INTO nodes (node, district, area_code, area_name, state, state_since, status_ts)
VALUES (:node, :district, :area_code, :area_name, :state, :since, :ts)
ON CONFLICT (node) DO UPDATE SET
    state_since = CASE WHEN nodes.state IS excluded.state THEN nodes.state_since
                       ELSE excluded.state_since END,
    state = excluded.state, status_ts = excluded.status_ts
"""


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Run the migrations not yet recorded, each in its own transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    applied = []
    for name, script in MIGRATIONS:
        if name in done:
            continue
        with atomic(conn):
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?)", (name, utc_iso(time.time()))
            )
        applied.append(name)
    return applied


def pending_migrations(conn: sqlite3.Connection) -> list[str]:
    try:
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    except sqlite3.OperationalError:
        done = set()
    return [name for name, _ in MIGRATIONS if name not in done]


class SqliteStore:
    """The receiver's writer connection (one thread uses it)."""

    engine = "sqlite"
    transient: tuple[type[Exception], ...] = (sqlite3.OperationalError,)

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout=10000")
            self.conn.execute("PRAGMA journal_mode=WAL")
            # The receiver acks the broker after the commit: a commit it acked must survive a
            # power cut, so FULL unless the operator chose otherwise.
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            migrate(self.conn)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the receiver database {path}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()

    def write(
        self, messages: Sequence[DataMessage], statuses: Sequence[StatusMessage], now: float
    ) -> WriteResult:
        at = utc_iso(now)
        summary = summarize(messages, rows_at=at)
        conn = self.conn
        with atomic(conn):
            before = conn.total_changes
            conn.executemany(INSERT_READINGS, summary.readings)
            conn.executemany(INSERT_EVENTS, summary.others)
            stored = conn.total_changes - before
            if summary.counts:
                conn.executemany(
                    "INSERT OR IGNORE INTO counts VALUES"
                    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*r[:8], utc_iso(r[8]), utc_iso(r[9]), *r[10:]) for r in summary.counts],
                )
            if summary.gaps:
                conn.executemany(
                    "INSERT OR IGNORE INTO declared_gaps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*r[:3], utc_iso(r[3]), *r[4:]) for r in summary.gaps],
                )
                conn.executemany(
                    "UPDATE sequences SET version = version + 1 WHERE node = ? AND epoch = ?",
                    [(r[0], r[6]) for r in summary.gaps],
                )
            conn.executemany(
                UPSERT_SEQUENCE,
                [(n, e, at, at, seq) for (n, e), seq in sorted(summary.sequences.items())],
            )
            for node, touch in sorted(summary.nodes.items()):
                conn.execute(TOUCH_NODE, (node, touch.district, normal_time(touch.last_ts), at))
                if touch.health is not None:
                    ts, verdict, reasons = touch.health
                    conn.execute(
                        "UPDATE nodes SET health_verdict = ?, health_reasons = ?, health_ts = ?"
                        " WHERE node = ? AND (health_ts IS NULL OR health_ts < ?)",
                        (verdict, json.dumps(reasons), utc_iso(ts), node, utc_iso(ts)),
                    )
                if touch.aqi is not None:
                    ts, value, sensor = touch.aqi
                    conn.execute(
                        "UPDATE nodes SET aqi_value = ?, aqi_sensor = ?, aqi_ts = ?"
                        " WHERE node = ? AND (aqi_ts IS NULL OR aqi_ts < ?)",
                        (value, sensor, utc_iso(ts), node, utc_iso(ts)),
                    )
            for status in statuses:
                self._status(status, now)
        return WriteResult(summary.events, stored, summary.events - stored, summary.newest_ts)

    def _status(self, status: StatusMessage, now: float) -> None:
        row = status_row(status, now)
        row.update(ts=utc_iso(row["ts"]), since=utc_iso(row["since"]), now=utc_iso(now))
        before = self.conn.total_changes
        self.conn.execute(STATUS_HISTORY, row)
        if self.conn.total_changes == before:
            return  # seen before: a retained status delivered again on a new session
        self.conn.execute(STATUS_ONLINE if row["state"] == "online" else STATUS_OFFLINE, row)

    def scan_holes(self, now: float, timeout_s: float) -> HoleReport:
        with atomic(self.conn):
            return holes.scan(_SqliteHoles(self.conn, now), timeout_s=timeout_s)


class _SqliteHoles:
    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now
        self.at = utc_iso(now)

    def due(self) -> list[SequenceState]:
        rows = self.conn.execute(
            "SELECT node, epoch, scanned_seq, max_seq, version FROM sequences"
            " WHERE max_seq > scanned_seq OR version > scanned_version"
        )
        return [SequenceState(*row) for row in rows]

    def missing(self, node: str, epoch: str, lo: int, hi: int) -> list[Range]:
        # Readings and the other kinds share one seq space: look at both tables.
        found: list[Range] = [
            (int(a), int(b))
            for a, b in self.conn.execute(
                "SELECT prev + 1, seq - 1 FROM ("
                " SELECT seq, LAG(seq, 1, ?1 - 1) OVER (ORDER BY seq) AS prev FROM ("
                "  SELECT seq FROM readings WHERE node = ?3 AND epoch = ?4"
                "   AND seq BETWEEN ?1 AND ?2"
                "  UNION ALL SELECT seq FROM events WHERE node = ?3 AND epoch = ?4"
                "   AND seq BETWEEN ?1 AND ?2))"
                " WHERE seq > prev + 1",
                (lo, hi, node, epoch),
            )
        ]
        top = max(
            self.conn.execute(
                f"SELECT MAX(seq) FROM {table} WHERE node = ? AND epoch = ?"
                " AND seq BETWEEN ? AND ?",
                (node, epoch, lo, hi),
            ).fetchone()[0]
            or 0
            for table in ("readings", "events")
        )
        if top < lo:
            return [(lo, hi)]
        if top < hi:
            found.append((top + 1, hi))
        return found

    def declared(self, node: str, epoch: str) -> list[Range]:
        rows = self.conn.execute(
            "SELECT COALESCE(first_seq, 1), last_seq FROM declared_gaps"
            " WHERE node = ? AND applies_to_epoch = ? AND last_seq IS NOT NULL"
            # A new epoch opens with an alert and this gap (seqs F and F + 1), its seqs
            # continuing above every seq the node used before: none below F is of this epoch.
            " UNION ALL SELECT 1, seq - 2 FROM declared_gaps"
            " WHERE node = ? AND epoch = ? AND applies_to_epoch <> epoch AND seq > 2",
            (node, epoch, node, epoch),
        )
        return [(int(a), int(b)) for a, b in rows]

    def tracked(self, node: str, epoch: str) -> list[TrackedHole]:
        rows = self.conn.execute(
            "SELECT id, first_seq, last_seq, state, noticed_at, opened_at FROM holes"
            " WHERE node = ? AND epoch = ? AND state <> 'closed' ORDER BY first_seq",
            (node, epoch),
        )
        return [
            TrackedHole(int(i), int(a), int(b), st, parse_iso(n), parse_iso(o) if o else None)
            for i, a, b, st, n, o in rows
        ]

    def track(self, node: str, epoch: str, piece: Range, like: TrackedHole | None) -> None:
        if like is None:
            state, noticed, opened = "pending", self.at, None
        else:
            state, noticed = like.state, utc_iso(like.noticed_at)
            opened = utc_iso(like.opened_at) if like.opened_at is not None else None
        self.conn.execute(
            "INSERT INTO holes (node, epoch, first_seq, last_seq, state, noticed_at, opened_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (node, epoch, piece[0], piece[1], state, noticed, opened),
        )

    def drop(self, hole: TrackedHole, closed_by: str) -> None:
        if hole.state == "pending":
            self.conn.execute("DELETE FROM holes WHERE id = ?", (hole.id,))
        else:
            self.conn.execute(
                "UPDATE holes SET state = 'closed', closed_at = ?, closed_by = ? WHERE id = ?",
                (self.at, closed_by, hole.id),
            )

    def advance(self, state: SequenceState, *, contiguous_seq: int) -> None:
        self.conn.execute(
            "UPDATE sequences SET scanned_seq = ?, contiguous_seq = ?, scanned_version = ?"
            " WHERE node = ? AND epoch = ?",
            (state.max_seq, contiguous_seq, state.version, state.node, state.epoch),
        )

    def age(self, timeout_s: float) -> int:
        before = self.conn.total_changes
        self.conn.execute(
            "UPDATE holes SET state = 'open', opened_at = ?"
            " WHERE state = 'pending' AND noticed_at <= ?",
            (self.at, utc_iso(self.now - timeout_s)),
        )
        return self.conn.total_changes - before

    def count_open(self) -> int:
        return int(
            self.conn.execute("SELECT COUNT(*) FROM holes WHERE state = 'open'").fetchone()[0]
        )


class SqliteReadDb:
    """A read-only connection for `ioc nodes` and `ioc serve`: it never writes or migrates."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise StorageError(f"no receiver database at {path}: start 'edge-agent ioc receive'")
        try:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout=5000")
            missing = pending_migrations(self.conn)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the receiver database {path}: {exc}") from exc
        if missing:
            self.conn.close()
            raise StorageError(
                f"{path} lacks migrations {', '.join(missing)}: run 'edge-agent ioc receive' once"
            )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            cursor = self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StorageError(f"reading the receiver database failed: {exc}") from exc
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    @staticmethod
    def time(ts: float) -> str:
        return utc_iso(ts)

    def close(self) -> None:
        self.conn.close()


def open_reader(path: Path) -> SqliteReadDb:
    return SqliteReadDb(path)
