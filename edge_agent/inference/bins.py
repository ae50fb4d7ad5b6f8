"""Clock-aligned counting bins and how much of each bin the camera really saw.

Bins start at local midnight in the camera's time zone and follow each other every
`interval_s` (a divisor of a day), so a 900 s bin always starts at :00, :15, :30 or :45 of
the local hour; every time is stamped in UTC. Coverage comes from the analysed frames'
timestamps: the time between two consecutive frames is covered when they are at most
`gap_s` apart; a longer gap is an outage (camera offline, source stalled, no detector), so
a bin that an outage cut says so instead of looking like an empty road.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


class BinClock:
    """Where the bins of one camera start."""

    def __init__(self, interval_s: float, timezone: str) -> None:
        self.interval_s = float(interval_s)
        self.zone = ZoneInfo(timezone)

    def start_of(self, ts: float) -> float:
        local = datetime.fromtimestamp(ts, self.zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        return midnight + (ts - midnight) // self.interval_s * self.interval_s

    def local_date(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.zone).date().isoformat()


class Coverage:
    """Covered seconds per bin, from the timestamps of analysed frames."""

    def __init__(self, clock: BinClock, gap_s: float) -> None:
        self.clock = clock
        self.gap_s = gap_s
        self.last_ts: float | None = None
        self._covered: dict[float, float] = {}

    def frame(self, ts: float) -> None:
        last = self.last_ts
        if last is not None and ts <= last:
            return
        if last is not None and ts - last <= self.gap_s:
            self._add(last, ts)
        self.last_ts = ts

    def _add(self, a: float, b: float) -> None:
        while a < b:
            start = self.clock.start_of(a)
            end = min(b, start + self.clock.interval_s)
            self._covered[start] = self._covered.get(start, 0.0) + (end - a)
            a = end

    def settled_until(self, now: float) -> float:
        """Every time before this is decided: frames came after it, or none came for
        longer than `gap_s`, so time since the last frame is an outage."""
        if self.last_ts is None:
            return now - self.gap_s
        return max(self.last_ts, now - self.gap_s)

    def take(self, start: float, end: float) -> float:
        """Share (0..1) of [start, end) covered; forgets that bin."""
        covered = self._covered.pop(start, 0.0)
        span = end - start
        return 0.0 if span <= 0 else max(0.0, min(1.0, covered / span))
