"""The fleet as a text table for `ioc nodes`."""

from __future__ import annotations

import time
from collections.abc import Sequence

from edge_agent.ioc.fleet import NodeRow


def age(ts: float | None, now: float) -> str:
    """`42 s`, `5 min`, `3 h`, `2 d` ago; `-` for never."""
    if ts is None:
        return "-"
    seconds = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


COLUMNS: tuple[str, ...] = ("NODE", "AREA", "STATE", "SINCE", "VERSION", "LAST EVENT")
COLUMNS += ("PENDING", "HEALTH", "HOLES", "AQI")


def table(fleet: Sequence[NodeRow], *, now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines: list[tuple[str, ...]] = [COLUMNS]
    for n in fleet:
        lines.append(
            (
                n.node,
                n.group_name
                if n.group_name == n.group_code
                else f"{n.group_name} ({n.group_code})",
                n.state,
                age(n.since, now),
                n.version or "-",
                age(n.last_event_ts, now),
                "-" if n.pending_rows is None else str(n.pending_rows),
                n.verdict or "-",
                str(n.open_holes),
                "-" if n.aqi is None else f"{n.aqi:.0f} ({age(n.aqi_ts, now)})",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(COLUMNS))]
    out = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in lines
    ]
    if not fleet:
        out.append("(no node has reported yet)")
    return "\n".join(out) + "\n"
