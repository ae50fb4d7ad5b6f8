"""The receiver's PostgreSQL store (psycopg 3, the `postgres` extra), for one receiver or
several sharing a subscription.

A group is one transaction. Its events travel as one JSON text that the server expands
(`jsonb_array_elements`), in key order, so two receivers inserting at once take row locks in
the same order and cannot deadlock; a deadlock or a lost connection is retried by the
receiver all the same (`transient`). Migrations and the hole scan hold advisory locks, so
receivers starting together migrate once and scan one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from edge_agent.contract import parse_iso
from edge_agent.errors import DependencyMissingError, StorageError
from edge_agent.ioc import holes
from edge_agent.ioc.holes import Range, SequenceState, TrackedHole
from edge_agent.ioc.intake import DataMessage, StatusMessage
from edge_agent.ioc.postgres_schema import MIGRATIONS
from edge_agent.ioc.store import HoleReport, WriteResult, status_row, summarize

MIGRATE_LOCK = 7_305_316_001
SCAN_LOCK = 7_305_316_002

BULK = """
WITH msg AS (
    SELECT m ->> 'd' AS district, m ->> 's' AS stream, e
    FROM jsonb_array_elements(%(batch)s::jsonb) AS m, jsonb_array_elements(m -> 'b') AS e
), r AS (
    INSERT INTO readings (node, epoch, seq, ts, sensor, quantity, value, unit, quality, stats)
    SELECT e ->> 'node', e ->> 'epoch', (e ->> 'seq')::bigint, (e ->> 'ts')::timestamptz,
           e -> 'data' ->> 'sensor', e -> 'data' ->> 'quantity',
           (e -> 'data' ->> 'value')::double precision, e -> 'data' ->> 'unit',
           e -> 'data' ->> 'quality', e -> 'data' -> 'stats'
    FROM msg WHERE e ->> 'kind' = 'reading'
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING RETURNING 1
), o AS (
    INSERT INTO events (node, epoch, seq, district, stream, ts, kind, data, received_at)
    SELECT e ->> 'node', e ->> 'epoch', (e ->> 'seq')::bigint, district, stream,
           (e ->> 'ts')::timestamptz, e ->> 'kind', e -> 'data', %(now)s
    FROM msg WHERE e ->> 'kind' <> 'reading'
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING RETURNING 1
)
SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM o)
"""

UPSERT_SEQUENCE = """
INSERT INTO sequences (node, epoch, first_received_at, last_received_at, max_seq)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (node, epoch) DO UPDATE SET
    last_received_at = EXCLUDED.last_received_at,
    max_seq = GREATEST(sequences.max_seq, EXCLUDED.max_seq),
    version = sequences.version + 1
"""

TOUCH_NODE = """
INSERT INTO nodes (node, district, last_event_ts, last_event_received_at)
VALUES (%s, %s, %s, %s)
ON CONFLICT (node) DO UPDATE SET
    last_event_received_at = EXCLUDED.last_event_received_at,
    last_event_ts = GREATEST(nodes.last_event_ts, EXCLUDED.last_event_ts)
"""

STATUS_HISTORY = """
INSERT INTO node_status (node, district, state, reason, ts, since, received_at, version,
    config_hash, epoch, last_seq, pending_rows, area_code, area_name, retained)
VALUES (%(node)s, %(district)s, %(state)s, %(reason)s, %(ts)s, %(since)s, %(now)s,
    %(version)s, %(config_hash)s, %(epoch)s, %(last_seq)s, %(pending_rows)s, %(area_code)s,
    %(area_name)s, %(retained)s)
ON CONFLICT DO NOTHING RETURNING id
"""

STATUS_ONLINE = """
INSERT INTO nodes (node, district, area_code, area_name, state, state_since, status_ts,
    version, config_hash, epoch, last_seq_reported, pending_rows, pending_reported_at)
VALUES (%(node)s, %(district)s, %(area_code)s, %(area_name)s, %(state)s, %(since)s, %(ts)s,
    %(version)s, %(config_hash)s, %(epoch)s, %(last_seq)s, %(pending_rows)s, %(ts)s)
ON CONFLICT (node) DO UPDATE SET
    district = EXCLUDED.district, area_code = EXCLUDED.area_code,
    area_name = EXCLUDED.area_name,
    state_since = CASE WHEN nodes.state IS NOT DISTINCT FROM EXCLUDED.state
                       THEN nodes.state_since ELSE EXCLUDED.state_since END,
    state = EXCLUDED.state, status_ts = EXCLUDED.status_ts, version = EXCLUDED.version,
    config_hash = EXCLUDED.config_hash, epoch = EXCLUDED.epoch,
    last_seq_reported = EXCLUDED.last_seq_reported, pending_rows = EXCLUDED.pending_rows,
    pending_reported_at = EXCLUDED.pending_reported_at
"""

STATUS_OFFLINE = """
INSERT INTO nodes (node, district, area_code, area_name, state, state_since, status_ts)
VALUES (%(node)s, %(district)s, %(area_code)s, %(area_name)s, %(state)s, %(since)s, %(ts)s)
ON CONFLICT (node) DO UPDATE SET
    state_since = CASE WHEN nodes.state IS NOT DISTINCT FROM EXCLUDED.state
                       THEN nodes.state_since ELSE EXCLUDED.state_since END,
    state = EXCLUDED.state, status_ts = EXCLUDED.status_ts
"""


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise DependencyMissingError(
            "a PostgreSQL store needs psycopg: pip install 'edge-agent[postgres]'"
        ) from None
    return psycopg


def dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def migrate(conn: Any) -> list[str]:
    """Run the migrations not yet recorded, each in its own transaction, under a lock that
    makes receivers starting together wait for each other."""
    applied = []
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for name, script in MIGRATIONS:
            if name in done:
                continue
            with conn.transaction():
                for statement in script.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (%s, now())", (name,))
            applied.append(name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
    return applied


class PostgresStore:
    engine = "postgresql"

    def __init__(self, dsn: str) -> None:
        self.psycopg = _psycopg()
        self.dsn = dsn
        self.transient: tuple[type[Exception], ...] = (
            self.psycopg.OperationalError,
            self.psycopg.InterfaceError,
        )
        self._conn: Any = None
        try:
            migrate(self._connection())
        except self.psycopg.Error as exc:
            raise StorageError(f"cannot open the receiver database: {exc}") from exc

    def _connection(self) -> Any:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = conn = self.psycopg.connect(
                self.dsn, autocommit=True, application_name="edge-agent-ioc"
            )
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(
        self, messages: Sequence[DataMessage], statuses: Sequence[StatusMessage], now: float
    ) -> WriteResult:
        import orjson

        summary = summarize(messages)
        at = dt(now)
        conn = self._connection()
        stored = 0
        with conn.transaction(), conn.cursor() as cur:
            if summary.events:
                batch = orjson.dumps(
                    [{"d": m.district, "s": m.stream, "b": m.envelopes} for m in messages]
                ).decode()
                cur.execute(BULK, {"batch": batch, "now": at})
                stored = int(cur.fetchone()[0])
            if summary.counts:
                cur.executemany(
                    "INSERT INTO counts VALUES"
                    " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(*r[:8], dt(r[8]), dt(r[9]), *r[10:]) for r in sorted(summary.counts)],
                )
            if summary.gaps:
                cur.executemany(
                    "INSERT INTO declared_gaps VALUES"
                    " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(*r[:3], dt(r[3]), *r[4:]) for r in sorted(summary.gaps)],
                )
            cur.executemany(
                UPSERT_SEQUENCE,
                [(n, e, at, at, seq) for (n, e), seq in sorted(summary.sequences.items())],
            )
            if summary.gaps:
                cur.executemany(
                    "UPDATE sequences SET version = version + 1 WHERE node = %s AND epoch = %s",
                    sorted({(r[0], r[6]) for r in summary.gaps}),
                )
            for node, touch in sorted(summary.nodes.items()):
                cur.execute(TOUCH_NODE, (node, touch.district, dt(parse_iso(touch.last_ts)), at))
                if touch.health is not None:
                    ts, verdict, reasons = touch.health
                    cur.execute(
                        "UPDATE nodes SET health_verdict = %s, health_reasons = %s::jsonb,"
                        " health_ts = %s WHERE node = %s"
                        " AND (health_ts IS NULL OR health_ts < %s)",
                        (verdict, orjson.dumps(reasons).decode(), dt(ts), node, dt(ts)),
                    )
                if touch.aqi is not None:
                    ts, value, sensor = touch.aqi
                    cur.execute(
                        "UPDATE nodes SET aqi_value = %s, aqi_sensor = %s, aqi_ts = %s"
                        " WHERE node = %s AND (aqi_ts IS NULL OR aqi_ts < %s)",
                        (value, sensor, dt(ts), node, dt(ts)),
                    )
            for status in statuses:
                row = status_row(status, now)
                row.update(ts=dt(row["ts"]), since=dt(row["since"]), now=at)
                cur.execute(STATUS_HISTORY, row)
                if cur.fetchone() is not None:
                    cur.execute(STATUS_ONLINE if row["state"] == "online" else STATUS_OFFLINE, row)
        return WriteResult(summary.events, stored, summary.events - stored, summary.newest_ts)

    def scan_holes(self, now: float, timeout_s: float) -> HoleReport:
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (SCAN_LOCK,))
            if not cur.fetchone()[0]:
                # Another receiver is scanning right now; its results are as good as ours.
                tx = _PostgresHoles(cur, now)
                return HoleReport(open=tx.count_open(), opened=0, closed=0)
            return holes.scan(_PostgresHoles(cur, now), timeout_s=timeout_s)


class _PostgresHoles:
    def __init__(self, cur: Any, now: float) -> None:
        self.cur = cur
        self.now = now
        self.at = dt(now)

    def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        self.cur.execute(sql, params)
        return list(self.cur.fetchall())

    def due(self) -> list[SequenceState]:
        rows = self._all(
            "SELECT node, epoch, scanned_seq, max_seq, version FROM sequences"
            " WHERE max_seq > scanned_seq OR version > scanned_version ORDER BY node, epoch",
            (),
        )
        return [SequenceState(*row) for row in rows]

    def missing(self, node: str, epoch: str, lo: int, hi: int) -> list[Range]:
        found: list[Range] = [
            (int(a), int(b))
            for a, b in self._all(
                "SELECT prev + 1, seq - 1 FROM ("
                " SELECT seq, LAG(seq, 1, %(lo)s - 1) OVER (ORDER BY seq) AS prev FROM ("
                "  SELECT seq FROM readings WHERE node = %(node)s AND epoch = %(epoch)s"
                "   AND seq BETWEEN %(lo)s AND %(hi)s"
                "  UNION ALL SELECT seq FROM events WHERE node = %(node)s AND epoch = %(epoch)s"
                "   AND seq BETWEEN %(lo)s AND %(hi)s) s) w"
                " WHERE seq > prev + 1",
                {"lo": lo, "hi": hi, "node": node, "epoch": epoch},
            )
        ]
        (top,) = self._all(
            "SELECT GREATEST("
            " (SELECT MAX(seq) FROM readings WHERE node = %(node)s AND epoch = %(epoch)s"
            "  AND seq BETWEEN %(lo)s AND %(hi)s),"
            " (SELECT MAX(seq) FROM events WHERE node = %(node)s AND epoch = %(epoch)s"
            "  AND seq BETWEEN %(lo)s AND %(hi)s))",
            {"lo": lo, "hi": hi, "node": node, "epoch": epoch},
        )[0]
        if top is None:
            return [(lo, hi)]
        if top < hi:
            found.append((int(top) + 1, hi))
        return found

    def declared(self, node: str, epoch: str) -> list[Range]:
        rows = self._all(
            "SELECT COALESCE(first_seq, 1), last_seq FROM declared_gaps"
            " WHERE node = %s AND applies_to_epoch = %s AND last_seq IS NOT NULL"
            # A new epoch opens with an alert and this gap (seqs F and F + 1), its seqs
            # continuing above every seq the node used before: none below F is of this epoch.
            " UNION ALL SELECT 1, seq - 2 FROM declared_gaps"
            " WHERE node = %s AND epoch = %s AND applies_to_epoch <> epoch AND seq > 2",
            (node, epoch, node, epoch),
        )
        return [(int(a), int(b)) for a, b in rows]

    def tracked(self, node: str, epoch: str) -> list[TrackedHole]:
        rows = self._all(
            "SELECT id, first_seq, last_seq, state, noticed_at, opened_at FROM holes"
            " WHERE node = %s AND epoch = %s AND state <> 'closed' ORDER BY first_seq",
            (node, epoch),
        )
        return [
            TrackedHole(int(i), int(a), int(b), st, n.timestamp(), o.timestamp() if o else None)
            for i, a, b, st, n, o in rows
        ]

    def track(self, node: str, epoch: str, piece: Range, like: TrackedHole | None) -> None:
        if like is None:
            state, noticed, opened = "pending", self.at, None
        else:
            state, noticed = like.state, dt(like.noticed_at)
            opened = dt(like.opened_at) if like.opened_at is not None else None
        self.cur.execute(
            "INSERT INTO holes (node, epoch, first_seq, last_seq, state, noticed_at, opened_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (node, epoch, piece[0], piece[1], state, noticed, opened),
        )

    def drop(self, hole: TrackedHole, closed_by: str) -> None:
        if hole.state == "pending":
            self.cur.execute("DELETE FROM holes WHERE id = %s", (hole.id,))
        else:
            self.cur.execute(
                "UPDATE holes SET state = 'closed', closed_at = %s, closed_by = %s WHERE id = %s",
                (self.at, closed_by, hole.id),
            )

    def advance(self, state: SequenceState, *, contiguous_seq: int) -> None:
        self.cur.execute(
            "UPDATE sequences SET scanned_seq = %s, contiguous_seq = %s, scanned_version = %s"
            " WHERE node = %s AND epoch = %s",
            (state.max_seq, contiguous_seq, state.version, state.node, state.epoch),
        )

    def age(self, timeout_s: float) -> int:
        self.cur.execute(
            "UPDATE holes SET state = 'open', opened_at = %s"
            " WHERE state = 'pending' AND noticed_at <= %s",
            (self.at, dt(self.now - timeout_s)),
        )
        return int(self.cur.rowcount)

    def count_open(self) -> int:
        return int(self._all("SELECT COUNT(*) FROM holes WHERE state = 'open'", ())[0][0])


class PostgresReadDb:
    """Read-only transactions for `ioc nodes` and `ioc serve`; never migrates."""

    def __init__(self, dsn: str) -> None:
        psycopg = _psycopg()
        from psycopg.rows import dict_row

        self._errors = psycopg.Error
        try:
            self.conn = psycopg.connect(
                dsn,
                autocommit=True,
                row_factory=dict_row,
                options="-c default_transaction_read_only=on",
                application_name="edge-agent-ioc-view",
            )
            done = {r["name"] for r in self.conn.execute("SELECT name FROM schema_migrations")}
        except psycopg.Error as exc:
            raise StorageError(f"cannot read the receiver database: {exc}") from exc
        missing = [name for name, _ in MIGRATIONS if name not in done]
        if missing:
            self.conn.close()
            raise StorageError(
                f"the database lacks migrations {', '.join(missing)}:"
                " run 'edge-agent ioc receive' once"
            )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            return list(self.conn.execute(sql.replace("?", "%s"), params).fetchall())
        except self._errors as exc:
            raise StorageError(f"reading the receiver database failed: {exc}") from exc

    @staticmethod
    def time(ts: float) -> datetime:
        return dt(ts)

    def close(self) -> None:
        self.conn.close()


def open_reader(dsn: str) -> PostgresReadDb:
    return PostgresReadDb(dsn)


__all__ = ["PostgresStore", "open_reader"]
