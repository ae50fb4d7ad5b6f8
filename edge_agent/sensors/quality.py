"""Reading quality: physical range, NaN/infinity, stuck values; and windowed aggregation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent.config.sensors import Range

# Physically plausible ranges for the quantities district nodes meet; config overrides them.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (-50.0, 80.0),
    "humidity": (0.0, 100.0),
    "pm1": (0.0, 1000.0),
    "pm2_5": (0.0, 1000.0),
    "pm10": (0.0, 2000.0),
    "noise": (20.0, 140.0),
    "water_level": (-20.0, 100.0),
    "pressure": (800.0, 1100.0),
    "rainfall": (0.0, 500.0),
    "wind_speed": (0.0, 90.0),
    "cpu_usage": (0.0, 100.0),
    "memory_usage": (0.0, 100.0),
    "disk_usage": (0.0, 100.0),
}


@dataclass(frozen=True)
class Checked:
    """A sample after validation: `value` is None when `quality` is 'bad'; `status` is the
    instrument's (normal, calibrating, fault)."""

    quantity: str
    value: float | None
    unit: str
    quality: str
    raw: float | str | None = None
    reason: str = ""
    status: str = "normal"


@dataclass
class _Stuck:
    value: float
    since: float


class Validator:
    """Marks NaN, infinities and out-of-range values 'bad', and long-unchanged values 'suspect'."""

    def __init__(self, ranges: Mapping[str, Range], *, stuck_after_s: float | None) -> None:
        self.ranges = {**DEFAULT_RANGES, **{q: (r.min, r.max) for q, r in ranges.items()}}
        self.stuck_after_s = stuck_after_s
        self._last: dict[str, _Stuck] = {}

    def check(
        self,
        quantity: str,
        value: float,
        unit: str,
        *,
        now: float,
        status: str = "normal",
        raw: str | None = None,
    ) -> Checked:
        if status != "normal":
            # Taken while calibrating or in fault: kept aside, never a measurement.
            why = f"{quantity}: instrument {status}"
            return Checked(quantity, None, unit, "bad", value, why, status)
        if raw is not None and not math.isfinite(value):
            return Checked(quantity, None, unit, "bad", raw, f"{quantity} is not a number: {raw!r}")
        if not math.isfinite(value):
            return Checked(quantity, None, unit, "bad", value, f"{quantity} is {value}")
        bounds = self.ranges.get(quantity)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            reason = f"{quantity} {value:g} outside {bounds[0]:g}..{bounds[1]:g}"
            return Checked(quantity, None, unit, "bad", value, reason)
        if self.stuck_after_s is not None:
            last = self._last.get(quantity)
            if last is None or last.value != value:
                self._last[quantity] = _Stuck(value, now)
            elif now - last.since >= self.stuck_after_s:
                reason = f"{quantity} unchanged for {now - last.since:.0f} s"
                return Checked(quantity, value, unit, "suspect", None, reason)
        return Checked(quantity, value, unit, "ok")


_STATUS_RANK = {"normal": 0, "calibrating": 1, "fault": 2}


@dataclass
class _Bin:
    unit: str
    values: list[float] = field(default_factory=list)
    suspect: int = 0
    bad: int = 0
    last_raw: float | str | None = None
    status: str = "normal"


class Aggregator:
    """Collects checked samples per quantity into wall-clock-aligned windows.

    A closed window becomes one reading per quantity: the mean as value, min/mean/max/count in
    `stats`, stamped with the window's end. Bad samples are counted, never averaged.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._start: float | None = None
        self._bins: dict[str, _Bin] = {}

    def add(self, checked: Checked, ts: float) -> None:
        if self._start is None:
            self._start = math.floor(ts / self.window_s) * self.window_s
        bin_ = self._bins.setdefault(checked.quantity, _Bin(checked.unit))
        if _STATUS_RANK.get(checked.status, 2) > _STATUS_RANK.get(bin_.status, 2):
            bin_.status = checked.status
        if checked.value is None:
            bin_.bad += 1
            bin_.last_raw = checked.raw
            return
        bin_.values.append(checked.value)
        if checked.quality == "suspect":
            bin_.suspect += 1

    def take_due(self, now: float, *, force: bool = False) -> list[tuple[float, dict[str, Any]]]:
        """Readings of the window that has ended by `now` (or of the open one with `force`)."""
        if self._start is None or not (force or now >= self._start + self.window_s):
            return []
        end = min(self._start + self.window_s, now) if force else self._start + self.window_s
        out = [(end, self._summary(quantity, b)) for quantity, b in self._bins.items()]
        self._start = None
        self._bins = {}
        return out

    def _summary(self, quantity: str, bin_: _Bin) -> dict[str, Any]:
        stats: dict[str, float | int] = {"count": len(bin_.values), "window_s": self.window_s}
        if bin_.bad:
            stats["bad"] = bin_.bad
        if not bin_.values or bin_.status != "normal":
            # A window with calibration or a fault in it is no measurement either.
            summary: dict[str, Any] = {
                "quantity": quantity,
                "value": None,
                "unit": bin_.unit,
                "quality": "bad",
                "raw": bin_.last_raw,
                "stats": stats,
            }
            if bin_.status != "normal":
                summary["status"] = bin_.status
            return summary
        mean = math.fsum(bin_.values) / len(bin_.values)
        stats.update(min=min(bin_.values), mean=mean, max=max(bin_.values))
        # suspect when most of the window was suspect: one stuck stretch is not a stuck sensor
        quality = "suspect" if bin_.suspect * 2 > len(bin_.values) else "ok"
        return {
            "quantity": quantity,
            "value": mean,
            "unit": bin_.unit,
            "quality": quality,
            "raw": None,
            "stats": stats,
        }
