"""Hourly means per sensor and quantity: sums of the open hours, means of the closed ones."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOUR = 3600
# Closed hours kept: a day plus the 7 hours before it for O3's 8-hour means, plus NowCast's 12.
RETAIN_HOURS = 50

Key = tuple[str, str]  # (sensor, quantity)


@dataclass
class Sums:
    """The running sum of one open hour."""

    total: float
    count: int
    unit: str


def hour_end_of(ts: float, window_s: float | None = None) -> int:
    """The end of the clock hour a reading belongs to. An aggregated reading is stamped with
    its window's end, so its window's middle decides (a 10:00:00 stamp of a 09:59-10:00
    window is the hour ending 10:00; a raw sample at 10:00:00 the one ending 11:00)."""
    middle = ts - (window_s or 0.0) / 2
    return math.floor(middle / HOUR) * HOUR + HOUR


class HourlyMeans:
    """Sums of the hours still open and the means of the last `RETAIN_HOURS` closed ones.

    One writer: the derive component on the event loop. An hour once closed takes no more
    readings (they are late, and counted), and a missing hour stays missing."""

    def __init__(self, *, min_samples: int = 1) -> None:
        self.min_samples = min_samples
        self.open: dict[tuple[str, str, int], Sums] = {}
        self.closed: dict[Key, dict[int, float]] = {}
        self.units: dict[Key, str] = {}
        self.last_closed: int | None = None

    def add(self, sensor: str, quantity: str, value: float, unit: str, hour_end: int) -> str:
        """Add one usable value; returns "ok", "late" (its hour is closed) or "unit" (another
        unit than this quantity's hours so far)."""
        if self.last_closed is not None and hour_end <= self.last_closed:
            return "late"
        known = self.units.setdefault((sensor, quantity), unit)
        if known != unit:
            return "unit"
        sums = self.open.get((sensor, quantity, hour_end))
        if sums is None:
            self.open[(sensor, quantity, hour_end)] = Sums(value, 1, unit)
        else:
            sums.total += value
            sums.count += 1
        return "ok"

    def close(self, hour_end: int) -> dict[Key, float]:
        """Close the hour ending at `hour_end`: its means (hours with too few values have
        none), kept for the windows that need them."""
        means: dict[Key, float] = {}
        for open_key in [k for k in self.open if k[2] == hour_end]:
            sums = self.open.pop(open_key)
            if sums.count >= self.min_samples:
                means[(open_key[0], open_key[1])] = sums.total / sums.count
        for key, mean in means.items():
            self.closed.setdefault(key, {})[hour_end] = mean
        self.last_closed = hour_end
        self.prune(hour_end - RETAIN_HOURS * HOUR)
        return means

    def prune(self, before: int) -> None:
        for key in list(self.closed):
            hours = {h: m for h, m in self.closed[key].items() if h > before}
            if hours:
                self.closed[key] = hours
            else:
                del self.closed[key]
        for open_key in [k for k in self.open if k[2] <= before]:
            del self.open[open_key]

    def restore(
        self,
        *,
        last_closed: int | None,
        closed: Iterable[tuple[str, str, int, float, str]],
        open_sums: Iterable[tuple[str, str, int, float, int, str]],
    ) -> None:
        """Load what the store kept (see store.py)."""
        self.last_closed = last_closed
        for sensor, quantity, hour_end, mean, unit in closed:
            self.closed.setdefault((sensor, quantity), {})[hour_end] = mean
            self.units.setdefault((sensor, quantity), unit)
        for sensor, quantity, hour_end, total, count, unit in open_sums:
            if last_closed is None or hour_end > last_closed:
                self.open[(sensor, quantity, hour_end)] = Sums(total, count, unit)
                self.units.setdefault((sensor, quantity), unit)

    def mean(self, sensor: str, quantity: str, hour_end: int) -> float | None:
        return self.closed.get((sensor, quantity), {}).get(hour_end)

    def pooled(self, sensors: Iterable[str] | None, quantity: str, hour_end: int) -> float | None:
        """The mean over `sensors` (None: every sensor) of their hourly means of `quantity`."""
        values = [
            hours[hour_end]
            for (sensor, q), hours in self.closed.items()
            if q == quantity and (sensors is None or sensor in sensors) and hour_end in hours
        ]
        return math.fsum(values) / len(values) if values else None

    def sensors_of(self, quantity: str) -> list[str]:
        return sorted({s for s, q in self.closed if q == quantity})

    def rows(
        self, means: Mapping[Key, float], hour_end: int
    ) -> list[tuple[str, str, int, float, str]]:
        """Closed-hour rows for the store."""
        return [(s, q, hour_end, m, self.units[(s, q)]) for (s, q), m in means.items()]
