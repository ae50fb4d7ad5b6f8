"""From what the device served and what reached the broker to the printed table.

Loss is counted per window of the run (live, SIGKILL, SIGTERM, outage), by serve: a window
is the device's serve counters at its start and at its end, per agent and register; a
reading belongs to the window in which the device served it, wherever it arrived later.
Produced = readings the device served to that agent in the window; lost = produced minus
those that reached the subscriber (after deduplication) by the end of the run.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bench.peer.collector import EDGE, GATEWAY, Reading
from bench.peer.procs import Cost

AGENTS = (EDGE, GATEWAY)
Counts = dict[str, list[int]]  # agent -> serves per register


@dataclass
class Window:
    name: str
    start: Counts
    end: Counts = field(default_factory=dict)
    cost_start: dict[str, Cost] = field(default_factory=dict)
    cost_end: dict[str, Cost] = field(default_factory=dict)

    def produced(self, agent: str) -> int:
        return sum(e - s for s, e in zip(self.start[agent], self.end[agent], strict=True))

    def contains(self, reading: Reading) -> bool:
        register = reading.register
        return (
            self.start[reading.agent][register] <= reading.serve < self.end[reading.agent][register]
        )


@dataclass(frozen=True)
class Loss:
    produced: int
    delivered: int

    @property
    def lost(self) -> int:
        return self.produced - self.delivered

    def __add__(self, other: Loss) -> Loss:
        return Loss(self.produced + other.produced, self.delivered + other.delivered)

    def __str__(self) -> str:
        return f"{self.lost:,} of {self.produced:,}"


def delivered(window: Window, readings: Iterable[Reading], agent: str) -> list[Reading]:
    seen: set[tuple[int, int]] = set()
    out = []
    for reading in readings:
        if reading.agent == agent and window.contains(reading):
            identity = (reading.register, reading.serve)
            if identity not in seen:
                seen.add(identity)
                out.append(reading)
    return out


def loss(window: Window, readings: Sequence[Reading], agent: str) -> Loss:
    return Loss(window.produced(agent), len(delivered(window, readings, agent)))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def ratio(ours: float, theirs: float) -> str:
    if ours != ours or theirs != theirs:  # NaN: not measured
        return "-"
    if theirs == 0:
        return "=" if ours == 0 else "inf"
    return f"{ours / theirs:.2f}"


@dataclass(frozen=True)
class Row:
    figure: str
    edge: str
    gateway: str
    ratio: str


def table(rows: Sequence[Row]) -> str:
    header = Row("figure", EDGE, "ThingsBoard gateway", f"{EDGE}/gateway")
    widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in Row.__dataclass_fields__]
    lines = []
    for i, row in enumerate([header, *rows]):
        cells = [getattr(row, f) for f in Row.__dataclass_fields__]
        lines.append(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w)
                for j, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def number_row(figure: str, values: Mapping[str, float], fmt: str) -> Row:
    def show(v: float) -> str:
        return "-" if v != v else format(v, fmt)

    return Row(
        figure, show(values[EDGE]), show(values[GATEWAY]), ratio(values[EDGE], values[GATEWAY])
    )


def loss_row(figure: str, losses: dict[str, Loss]) -> Row:
    return Row(
        figure,
        str(losses[EDGE]),
        str(losses[GATEWAY]),
        ratio(losses[EDGE].lost, losses[GATEWAY].lost),
    )
