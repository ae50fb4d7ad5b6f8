"""Speed estimates between two lines a known distance apart.

The time between a track's crossings of the two lines gives its mean speed over the
stretch; a bin reports per class the count, mean and 85th percentile (the figure traffic
engineers set limits by). It is an estimate for planning, never evidence for a fine: each
crossing time is only known to within one analysed frame (0.2 s at 5 fps, about ±10 % at
40 km/h over 20 m), and the distance is measured on the road, not in the picture.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from edge_agent.config.cameras import SpeedConfig

MAX_KMH = 250.0  # faster than this is a tracking error (an id swap), not a vehicle


class SpeedMeter:
    def __init__(self, stretches: Sequence[SpeedConfig]) -> None:
        self.stretches = list(stretches)
        self._first: dict[tuple[int, str], tuple[str, float]] = {}
        self._done: set[tuple[int, str]] = set()

    def crossed(self, track_id: int, line: str, ts: float) -> list[tuple[SpeedConfig, float]]:
        """Speeds (km/h) completed by `track_id` crossing `line` at `ts`."""
        found = []
        for stretch in self.stretches:
            key = (track_id, stretch.name)
            if line not in stretch.lines or key in self._done:
                continue
            first = self._first.get(key)
            if first is None:
                self._first[key] = (line, ts)
                continue
            if first[0] == line:
                continue
            elapsed = ts - first[1]
            self._done.add(key)
            kmh = stretch.distance_m / elapsed * 3.6 if elapsed > 0 else math.inf
            if kmh <= MAX_KMH:
                found.append((stretch, kmh))
        return found

    def forget(self, live: Iterable[int]) -> None:
        keep = set(live)
        self._first = {k: v for k, v in self._first.items() if k[0] in keep}
        self._done = {k for k in self._done if k[0] in keep}


def speed_stats(samples: Sequence[float]) -> dict[str, Any]:
    """count, mean and 85th percentile (nearest rank) in km/h, one decimal."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(0.85 * len(ordered)))
    return {
        "count": len(ordered),
        "mean_kmh": round(sum(ordered) / len(ordered), 1),
        "p85_kmh": round(ordered[rank - 1], 1),
    }
