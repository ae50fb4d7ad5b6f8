"""Line crossings with hysteresis: a box whose anchor jitters on a line counts once.

A track's side of a line is only taken when its anchor lies at least `margin` (normalised)
past the line and within the segment's span (between the perpendiculars through its two
ends, as supervision's `LineZone` does). A crossing is a change of that confirmed side;
positions inside the band or beyond the ends neither confirm nor reset a side. The first
confirmed side of a track is its start, not a crossing. supervision's `LineZone` compares
raw sides frame to frame: an anchor wobbling a pixel over the line counts in, out, in...
(its `minimum_crossing_threshold` asks for several frames instead, which at the few frames
per second an edge node analyses delays or misses real crossings). A distance band costs no
frames. Each track counts at most once per line and direction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_agent.config.cameras import LineConfig

Point = tuple[float, float]


@dataclass(frozen=True)
class Crossing:
    """A confirmed change of side; `first` is False for a repeat in the same direction."""

    line: LineConfig
    direction: str
    first: bool


def signed_distance(line: LineConfig, point: Point) -> tuple[float, float]:
    """(distance from the line, positive on its right as seen in the image; position along
    the segment, 0 at its first point and 1 at its second)."""
    (ax, ay), (bx, by) = line.points
    dx, dy = bx - ax, by - ay
    length = math.hypot(dx, dy)
    px, py = point[0] - ax, point[1] - ay
    return (dx * py - dy * px) / length, (dx * px + dy * py) / (length * length)


class LineCrossings:
    """Confirmed sides of every live track for one camera's lines."""

    def __init__(self, lines: Sequence[LineConfig]) -> None:
        self.lines = list(lines)
        self._side: dict[tuple[int, str], int] = {}
        self._counted: dict[tuple[int, str], set[str]] = {}

    def update(self, track_id: int, point: Point) -> list[Crossing]:
        crossings = []
        for line in self.lines:
            distance, along = signed_distance(line, point)
            if not 0.0 <= along <= 1.0 or abs(distance) < line.margin or distance == 0.0:
                continue
            side = 1 if distance > 0 else -1
            key = (track_id, line.name)
            before = self._side.get(key)
            self._side[key] = side
            if before is None or before == side:
                continue
            # From the left (negative) to the right is the first direction name.
            direction = line.directions[0 if side > 0 else 1]
            done = self._counted.setdefault(key, set())
            crossings.append(Crossing(line, direction, direction not in done))
            done.add(direction)
        return crossings

    def forget(self, live: Iterable[int]) -> None:
        """Drop the state of tracks that are gone."""
        keep = set(live)
        self._side = {k: v for k, v in self._side.items() if k[0] in keep}
        self._counted = {k: v for k, v in self._counted.items() if k[0] in keep}
