"""Zone geometry. Coordinates are normalised (0..1) so the same configuration fits any
stream resolution; an object's position is the bottom centre of its box (where it stands).
What happens in zones and on lines is `analytics.py`'s."""

from __future__ import annotations

from collections.abc import Sequence

from edge_agent.config.cameras import ZoneConfig
from edge_agent.inference.tracker import Box

WHOLE_FRAME = ZoneConfig(name="frame", polygon=[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)])


def anchor(box: Box, width: int, height: int) -> tuple[float, float]:
    """Bottom centre of a pixel box, normalised."""
    return ((box[0] + box[2]) / 2 / width, box[3] / height)


def inside(point: tuple[float, float], polygon: Sequence[tuple[float, float]]) -> bool:
    """Ray casting; points on an edge may land either side."""
    x, y = point
    result = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            result = not result
        j = i
    return result
