"""What the receiver's stores share: the write protocol and the rows built in Python.

Two engines hold the same tables (docs/province.md): SQLite (`sqlite_store.py`, one file,
the default) and PostgreSQL (`postgres_store.py`, for several receivers). Bulk rows, events
and readings, are expanded by the database itself from the canonical JSON of each message
(`json_each` / `jsonb_array_elements`), so Python never builds a tuple per event; the rare
kinds (counts, declared gaps, health, the AQI) and the per-node and per-sequence summaries
are built here, once for both engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_agent.contract import parse_iso, utc_iso
from edge_agent.ioc.intake import DataMessage, StatusMessage

AQI_QUANTITY = "vn_aqi_hourly"


@dataclass(frozen=True)
class WriteResult:
    events: int  # accepted envelopes in the group
    stored: int  # of which new
    duplicates: int
    newest_ts: float | None  # observation time of the newest event in the group


@dataclass(frozen=True)
class HoleReport:
    open: int
    opened: int
    closed: int


class Store(Protocol):
    """One database connection, used from one thread (the receiver's writer)."""

    engine: str
    # Errors worth retrying the same group for (the database away, the disk full).
    transient: tuple[type[Exception], ...]

    def write(
        self, messages: Sequence[DataMessage], statuses: Sequence[StatusMessage], now: float
    ) -> WriteResult: ...

    def scan_holes(self, now: float, timeout_s: float) -> HoleReport: ...

    def close(self) -> None: ...


@dataclass
class NodeTouch:
    district: str
    last_ts: str  # RFC 3339 as sent; the newest of this group
    health: tuple[float, str, Any] | None = None  # ts, verdict, reasons
    aqi: tuple[float, float | None, str] | None = None  # ts, value, sensor


@dataclass
class Summary:
    """Everything a group writes besides the bulk rows (and, for SQLite, those too)."""

    nodes: dict[str, NodeTouch] = field(default_factory=dict)
    sequences: dict[tuple[str, str], int] = field(default_factory=dict)  # highest seq seen
    readings: list[tuple[Any, ...]] = field(default_factory=list)
    others: list[tuple[Any, ...]] = field(default_factory=list)  # every kind but readings
    counts: list[tuple[Any, ...]] = field(default_factory=list)
    gaps: list[tuple[Any, ...]] = field(default_factory=list)
    events: int = 0
    newest_ts: float | None = None


def normal_time(ts: str) -> str:
    """RFC 3339 with milliseconds, the form that sorts as text (`...06.123Z`)."""
    return ts if len(ts) == 24 else utc_iso(parse_iso(ts))


def summarize(messages: Sequence[DataMessage], *, rows_at: str | None = None) -> Summary:
    """One pass over the accepted envelopes. With `rows_at` (the receive time as stored)
    it also builds the reading and event rows, for a store that inserts them itself."""
    import orjson

    dumps = orjson.dumps
    summary = Summary()
    readings, others = summary.readings, summary.others
    newest = ""
    for message in messages:
        node = message.node
        touch = summary.nodes.get(node)
        for env in message.envelopes:
            ts = env["ts"]
            if touch is None:
                touch = summary.nodes[node] = NodeTouch(message.district, ts)
            elif ts > touch.last_ts:
                touch.last_ts = ts
            epoch, seq, kind, data = env["epoch"], env["seq"], env["kind"], env["data"]
            key = (node, epoch)
            if summary.sequences.get(key, 0) < seq:
                summary.sequences[key] = seq
            if kind == "reading":
                if rows_at is not None:
                    stats = data.get("stats")
                    readings.append(
                        (
                            node,
                            epoch,
                            seq,
                            normal_time(ts),
                            data["sensor"],
                            data["quantity"],
                            data["value"],
                            data["unit"],
                            data["quality"],
                            None if stats is None else dumps(stats).decode(),
                        )
                    )
                if data["quantity"] == AQI_QUANTITY:
                    at = parse_iso(ts)
                    if touch.aqi is None or touch.aqi[0] < at:
                        touch.aqi = (at, data["value"], data["sensor"])
                continue
            if rows_at is not None:
                others.append(
                    (
                        node,
                        epoch,
                        seq,
                        message.district,
                        message.stream,
                        normal_time(ts),
                        kind,
                        dumps(data).decode(),
                        rows_at,
                    )
                )
            if kind == "count":
                summary.counts.extend(_count_rows(env))
            elif kind == "gap":
                summary.gaps.append(_gap_row(env))
            elif kind == "health":
                at = parse_iso(ts)
                if touch.health is None or touch.health[0] < at:
                    touch.health = (at, data["verdict"], data["reasons"])
        summary.events += len(message.envelopes)
        if touch is not None and touch.last_ts > newest:
            newest = touch.last_ts
    summary.newest_ts = parse_iso(newest) if newest else None
    return summary


def _count_rows(env: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Long form: one row per label (zones), per direction and label (lines), or per
    movement and class (movements: `direction` holds the movement, zone and line are null).
    Speed bins carry no counts; their figures stay in the event (the events table)."""
    data = env["data"]
    head = (env["node"], env["epoch"], env["seq"], data["camera"])
    span = (parse_iso(data["from"]), parse_iso(data["to"]), data["interval_s"])
    rows: list[tuple[Any, ...]] = []
    if "zone" in data:
        objects, entries = data["objects"], data["entries"]
        for label in sorted(set(objects) | set(entries)):
            rows.append(
                (
                    *head,
                    data["zone"],
                    None,
                    "",
                    label,
                    *span,
                    objects.get(label),
                    entries.get(label),
                    None,
                )
            )
    elif "movements" in data:
        for movement, labels in sorted(data["movements"].items()):
            for label, n in sorted(labels.items()):
                rows.append((*head, None, None, movement, label, *span, None, None, n))
    elif "crossings" in data:
        for direction, labels in sorted(data["crossings"].items()):
            for label, n in sorted(labels.items()):
                rows.append((*head, None, data["line"], direction, label, *span, None, None, n))
    return rows


def _gap_row(env: dict[str, Any]) -> tuple[Any, ...]:
    data = env["data"]
    # A corrupt outbox was replaced: its gap arrives in the new epoch and speaks of the old.
    # A corrupt file's gap has no first seq: the node cannot tell which of the pending rows
    # were lost, only the last seq used.
    applies_to = data.get("previous_epoch") or env["epoch"]
    first, last = data.get("first_seq"), data.get("last_seq")
    return (
        env["node"],
        env["epoch"],
        env["seq"],
        parse_iso(env["ts"]),
        data["reason"],
        data.get("priority"),
        applies_to,
        first,
        last,
        data.get("count"),
        data.get("detail"),
    )


def status_row(status: StatusMessage, now: float) -> dict[str, Any]:
    """A status message as the columns of `node_status`, with the time its state began:
    the node's own `ts` for a birth or a clean shutdown, our clock for the will (whose `ts`
    is the time the node had connected)."""
    p = status.payload
    area = p.get("area") or {}
    reason = p.get("reason") or ""
    ts = parse_iso(p["ts"])
    return {
        "node": status.node,
        "district": status.district,
        "state": p["state"],
        "reason": reason,
        "ts": ts,
        "since": now if reason == "will" else ts,
        "version": p.get("version"),
        "config_hash": p.get("config_hash"),
        "epoch": p.get("epoch"),
        "last_seq": p.get("last_seq"),
        "pending_rows": p.get("pending_rows"),
        "area_code": area.get("code"),
        "area_name": area.get("name"),
        "retained": status.retained,
    }
