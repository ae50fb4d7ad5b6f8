"""Reading the receiver's database: the fleet table, one node's page, counts for checks.

Read-only on both engines (SQLite opened `mode=ro`, PostgreSQL in read-only transactions),
so `ioc nodes` and `ioc serve` can run beside the receivers, and never migrate. The SQL is
the same for both: it reads the views and tables documented in docs/province.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from edge_agent.contract import parse_iso, utc_iso


class Database(Protocol):
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def as_time(value: Any) -> float | None:
    """A time column as seconds since the epoch (SQLite keeps text, PostgreSQL timestamptz)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return parse_iso(str(value))


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True)
class NodeRow:
    node: str
    district: str
    area_code: str | None
    area_name: str | None
    group_code: str
    group_name: str
    state: str  # online, offline, or unknown (events seen, no status yet)
    since: float | None
    version: str | None
    epoch: str | None
    pending_rows: int | None  # as the last birth reported it
    pending_reported_at: float | None
    last_event_ts: float | None
    last_event_received_at: float | None
    verdict: str | None  # from the last health event
    health_ts: float | None
    aqi: float | None
    aqi_sensor: str | None
    aqi_ts: float | None
    open_holes: int

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if (key == "since" or key.endswith(("_ts", "_at"))) and value is not None:
                out[key] = utc_iso(value)
        return out


def _node_row(row: dict[str, Any]) -> NodeRow:
    return NodeRow(
        node=row["node"],
        district=row["district"],
        area_code=row["area_code"],
        area_name=row["area_name"],
        group_code=row["group_code"],
        group_name=row["group_name"],
        state=row["state"],
        since=as_time(row["state_since"]),
        version=row["version"],
        epoch=row["epoch"],
        pending_rows=row["pending_rows"],
        pending_reported_at=as_time(row["pending_reported_at"]),
        last_event_ts=as_time(row["last_event_ts"]),
        last_event_received_at=as_time(row["last_event_received_at"]),
        verdict=row["health_verdict"],
        health_ts=as_time(row["health_ts"]),
        aqi=row["aqi_value"],
        aqi_sensor=row["aqi_sensor"],
        aqi_ts=as_time(row["aqi_ts"]),
        open_holes=int(row["open_holes"]),
    )


@dataclass(frozen=True)
class NodeDetail:
    row: NodeRow
    readings: list[dict[str, Any]]  # the newest reading per sensor and quantity
    cameras: list[dict[str, Any]]  # camera, state, since, counted in the last hour by label
    events: list[dict[str, Any]]  # the newest events of every kind
    sequences: list[dict[str, Any]]  # per epoch: highest and highest contiguous seq
    holes: list[dict[str, Any]]
    statuses: list[dict[str, Any]]  # the node's status history, newest first


class Reader:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, *, path: Path | None = None, dsn: str | None = None) -> Reader:
        if dsn is not None:
            from edge_agent.ioc.postgres_store import open_reader as open_postgres

            return cls(open_postgres(dsn))
        from edge_agent.ioc.sqlite_store import open_reader as open_sqlite

        return cls(open_sqlite(path or Path("ioc.sqlite3")))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fleet(self) -> list[NodeRow]:
        rows = self.db.query("SELECT * FROM fleet ORDER BY group_name, node")
        return [_node_row(r) for r in rows]

    def node(self, node: str, *, events: int = 30) -> NodeDetail | None:
        found = self.db.query("SELECT * FROM fleet WHERE node = ?", (node,))
        if not found:
            return None
        q = self.db.query
        readings = q(
            "SELECT sensor, quantity, value, unit, quality, ts FROM latest_readings"
            " WHERE node = ? ORDER BY sensor, quantity",
            (node,),
        )
        recent = q(
            "SELECT ts, 'reading' AS kind, epoch, seq, sensor AS source, quantity, value, unit"
            " FROM readings WHERE node = ? ORDER BY ts DESC LIMIT ?",
            (node, events),
        ) + q(
            "SELECT ts, kind, epoch, seq, stream AS source, data FROM events"
            " WHERE node = ? ORDER BY ts DESC LIMIT ?",
            (node, events),
        )
        for event in recent:
            event["ts"] = as_time(event["ts"])
            if "data" in event:
                event["data"] = as_json(event["data"])
        recent.sort(key=lambda e: e["ts"], reverse=True)
        for reading in readings:
            reading["ts"] = as_time(reading["ts"])
        return NodeDetail(
            row=_node_row(found[0]),
            readings=readings,
            cameras=self._cameras(node),
            events=recent[:events],
            sequences=[
                {**s, "last_received_at": as_time(s["last_received_at"])}
                for s in q(
                    "SELECT epoch, max_seq, contiguous_seq, last_received_at FROM sequences"
                    " WHERE node = ? ORDER BY last_received_at DESC",
                    (node,),
                )
            ],
            holes=self.holes(node),
            statuses=[
                {**s, "ts": as_time(s["ts"]), "received_at": as_time(s["received_at"])}
                for s in q(
                    "SELECT state, reason, ts, received_at, version, pending_rows"
                    " FROM node_status WHERE node = ? ORDER BY received_at DESC LIMIT 20",
                    (node,),
                )
            ],
        )

    def _cameras(self, node: str) -> list[dict[str, Any]]:
        cameras: dict[str, dict[str, Any]] = {}
        for row in self.db.query(
            "SELECT camera, state, ts FROM camera_events WHERE node = ? AND event = 'state'"
            " ORDER BY ts",
            (node,),
        ):
            cameras[row["camera"]] = {
                "camera": row["camera"],
                "state": row["state"],
                "since": as_time(row["ts"]),
                "counted": {},
            }
        newest = self.db.query("SELECT MAX(ts_to) AS ts FROM counts WHERE node = ?", (node,))
        if newest and newest[0]["ts"] is not None:
            until = as_time(newest[0]["ts"]) or 0.0
            for row in self.db.query(
                "SELECT camera, label, SUM(COALESCE(entries, crossings, 0)) AS n FROM counts"
                " WHERE node = ? AND ts_to > ? GROUP BY camera, label ORDER BY camera, label",
                (node, self.db_time(until - 3600)),
            ):
                entry = cameras.setdefault(
                    row["camera"],
                    {"camera": row["camera"], "state": None, "since": None, "counted": {}},
                )
                entry["counted"][row["label"]] = int(row["n"])
        return list(cameras.values())

    def db_time(self, ts: float) -> Any:
        to_db = getattr(self.db, "time", None)
        return to_db(ts) if to_db is not None else utc_iso(ts)

    def holes(self, node: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT node, epoch, first_seq, last_seq, noticed_at, opened_at FROM open_holes"
        rows = (
            self.db.query(sql + " WHERE node = ? ORDER BY opened_at", (node,))
            if node is not None
            else self.db.query(sql + " ORDER BY node, opened_at")
        )
        return [
            {**r, "noticed_at": as_time(r["noticed_at"]), "opened_at": as_time(r["opened_at"])}
            for r in rows
        ]

    def declared_gaps(self, node: str) -> list[dict[str, Any]]:
        return self.db.query(
            "SELECT epoch, seq, reason, applies_to_epoch, first_seq, last_seq, count"
            " FROM declared_gaps WHERE node = ? ORDER BY epoch, seq",
            (node,),
        )

    def count(self, node: str | None = None) -> int:
        where, params = (" WHERE node = ?", (node,)) if node is not None else ("", ())
        total = 0
        for table in ("readings", "events"):
            total += int(self.db.query(f"SELECT COUNT(*) AS n FROM {table}{where}", params)[0]["n"])
        return total

    def seqs(self, node: str, epoch: str) -> list[int]:
        rows = self.db.query(
            "SELECT seq FROM readings WHERE node = ? AND epoch = ?"
            " UNION ALL SELECT seq FROM events WHERE node = ? AND epoch = ? ORDER BY seq",
            (node, epoch, node, epoch),
        )
        return [int(r["seq"]) for r in rows]
