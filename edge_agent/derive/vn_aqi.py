"""VN_AQI as Decision 1459/QĐ-TCMT (2019) defines it: Table 2 sub-indices, NowCast, hourly
and daily AQI, the six categories of Table 1.

Pure arithmetic without I/O: the derived stream (`derive/component.py`) and `edge-agent aqi`
(`derive/aqi_cli.py`) both call these functions, so the command checks what the node sends.
Concentrations are µg/m³ for every pollutant, CO included, as in Table 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

LEVELS: tuple[int, ...] = (0, 50, 100, 150, 200, 300, 400, 500)

# Decision 1459/QĐ-TCMT, section 2.2.1, Table 2: BP_i in µg/m³ for I_i = LEVELS[i]. O3 (8h)
# stops at I = 300 ("-" in the table). The last column is "≥": at or above it the index is 500.
BREAKPOINTS: dict[str, tuple[float, ...]] = {
    "pm2_5": (0, 25, 50, 80, 150, 250, 350, 500),
    "pm10": (0, 50, 150, 250, 350, 420, 500, 600),
    "o3_1h": (0, 160, 200, 300, 400, 800, 1000, 1200),
    "o3_8h": (0, 100, 120, 170, 210, 400),
    "co": (0, 10_000, 30_000, 45_000, 60_000, 90_000, 120_000, 150_000),
    "so2": (0, 125, 350, 550, 800, 1600, 2100, 2630),
    "no2": (0, 100, 200, 700, 1200, 2350, 3100, 3850),
}

# Pollutants in the order that breaks a tie for the dominant one (particles first).
POLLUTANTS: tuple[str, ...] = ("pm2_5", "pm10", "o3", "no2", "so2", "co")
PARTICLES: tuple[str, ...] = ("pm2_5", "pm10")
GASES: tuple[str, ...] = ("o3", "no2", "so2", "co")
NOWCAST_HOURS = 12
# Section 2.2.2.b: no O3 index from the 8-hour mean when the day's highest one exceeds this.
O3_8H_LIMIT = 400.0


@dataclass(frozen=True)
class Category:
    """One row of Table 1: index range, code, Vietnamese label and the official colour."""

    code: str
    label_vi: str
    color: tuple[int, int, int]
    low: int
    high: int


CATEGORIES: tuple[Category, ...] = (
    Category("tot", "Tốt", (0, 228, 0), 0, 50),
    Category("trung_binh", "Trung bình", (255, 255, 0), 51, 100),
    Category("kem", "Kém", (255, 126, 0), 101, 150),
    Category("xau", "Xấu", (255, 0, 0), 151, 200),
    Category("rat_xau", "Rất xấu", (143, 63, 151), 201, 300),
    Category("nguy_hai", "Nguy hại", (126, 0, 35), 301, 500),
)


def category(aqi: int) -> Category:
    """The Table 1 category of an (integer) index."""
    if aqi < 0:
        raise ValueError(f"an AQI is never negative, got {aqi}")
    for cat in CATEGORIES:
        if aqi <= cat.high:
            return cat
    return CATEGORIES[-1]


def round_half_up(value: float) -> int:
    """ "Làm tròn thành số nguyên": .5 goes up. Rounded to 9 places first, so that 109.5
    computed as 109.49999999999999 still becomes 110."""
    return math.floor(round(value, 9) + 0.5)


def sub_index_exact(table: str, concentration: float) -> float | None:
    """Formula 1/2 of section 2.2.1.b: linear interpolation on Table 2, unrounded.

    Negative concentrations (zero drift of gas analysers) count as 0. At or above the last
    breakpoint the index is 500; O3 (8h) above 400 µg/m³ has no index (None)."""
    points = BREAKPOINTS[table]
    c = max(0.0, concentration)
    if table == "o3_8h" and c > O3_8H_LIMIT:
        return None
    if c >= points[-1]:
        return float(LEVELS[len(points) - 1])
    for i in range(len(points) - 1):
        lo, hi = points[i], points[i + 1]
        if c <= hi:
            return (LEVELS[i + 1] - LEVELS[i]) / (hi - lo) * (c - lo) + LEVELS[i]
    raise AssertionError("unreachable: c is below the last breakpoint")


def sub_index(table: str, concentration: float) -> int | None:
    """The sub-index rounded to an integer, as the decision publishes it."""
    exact = sub_index_exact(table, concentration)
    return None if exact is None else round_half_up(exact)


def nowcast(hours: Sequence[float | None]) -> float | None:
    """NowCast of section 2.2.1.a from hourly means, most recent first (c1 = this hour).

    Only the first 12 are used; None is a missing hour (its weight is 0, it is never filled).
    Needs at least 2 of c1, c2, c3. w* = c_min / c_max over the hours present; w* <= 1/2
    gives w = 1/2 and NowCast = sum(0.5^i c_i), otherwise w = w* and NowCast =
    sum(w^(i-1) c_i) / sum(w^(i-1)), both exactly as the decision writes them."""
    window = list(hours[:NOWCAST_HOURS])
    if sum(1 for c in window[:3] if c is not None) < 2:
        return None
    present = [(i, max(0.0, c)) for i, c in enumerate(window, start=1) if c is not None]
    c_max = max(c for _, c in present)
    if c_max == 0:
        return 0.0
    w_star = min(c for _, c in present) / c_max
    if w_star <= 0.5:
        return math.fsum(0.5**i * c for i, c in present)
    weights = [(w_star ** (i - 1), c) for i, c in present]
    return math.fsum(w * c for w, c in weights) / math.fsum(w for w, _ in weights)


def mean_if_covered(values: Sequence[float | None], *, min_coverage: float) -> float | None:
    """The arithmetic mean of the values present, or None when fewer than `min_coverage` of
    them are (a mean over too few hours is not that period's mean)."""
    present = [v for v in values if v is not None]
    if not values or not present or len(present) < min_coverage * len(values):
        return None
    return math.fsum(present) / len(present)


def max_8h_mean(
    hours: Sequence[float | None], *, first_end: int = 7, min_coverage: float = 0.75
) -> float | None:
    """The highest 8-hour mean (section 2.2.2.a) among windows ending at index `first_end`
    and later, each the mean of 8 consecutive hourly means (oldest first)."""
    means = [
        mean_if_covered(hours[end - 7 : end + 1], min_coverage=min_coverage)
        for end in range(max(first_end, 7), len(hours))
    ]
    present = [m for m in means if m is not None]
    return max(present) if present else None


Period = Literal["hourly", "daily"]


@dataclass(frozen=True)
class AqiResult:
    """One VN_AQI: the index (None when PM2.5 and PM10 are both missing), the sub-indices
    that could be computed, the concentrations they came from, and why any is missing."""

    period: Period
    aqi: int | None
    dominant: str | None
    sub_indices: Mapping[str, int] = field(default_factory=dict)
    inputs: Mapping[str, float] = field(default_factory=dict)
    reason: str | None = None

    @property
    def category(self) -> Category | None:
        return None if self.aqi is None else category(self.aqi)

    def fields(self) -> dict[str, Any]:
        """The reading fields the status page and the fleet view read (docs/contract.md)."""
        data: dict[str, Any] = {
            "sub_indices": dict(self.sub_indices),
            "inputs": {k: round(v, 2) for k, v in self.inputs.items()},
        }
        cat = self.category
        if cat is not None:
            data.update(
                category=cat.code,
                color=list(cat.color),
                label_vi=cat.label_vi,
                dominant=self.dominant,
            )
        if self.reason:
            data["reason"] = self.reason
        return data


def _combine(period: Period, exact: dict[str, float], inputs: dict[str, float]) -> AqiResult:
    rounded = {p: round_half_up(v) for p, v in exact.items()}
    if not any(p in rounded for p in PARTICLES):
        why = (
            "no PM2.5 or PM10 NowCast (it needs 2 of the last 3 hours)"
            if period == "hourly"
            else "no PM2.5 or PM10 24-hour mean"
        )
        return AqiResult(period, None, None, rounded, inputs, f"{why}; VN_AQI requires one")
    dominant = max((p for p in POLLUTANTS if p in rounded), key=lambda p: rounded[p])
    return AqiResult(period, rounded[dominant], dominant, rounded, inputs)


def hourly_aqi(
    *,
    pm2_5_hours: Sequence[float | None] = (),
    pm10_hours: Sequence[float | None] = (),
    pm2_5: float | None = None,
    pm10: float | None = None,
    o3: float | None = None,
    co: float | None = None,
    so2: float | None = None,
    no2: float | None = None,
) -> AqiResult:
    """AQI^h (section 2.2.1): NowCast of the last 12 hourly means (most recent first) for
    PM2.5 and PM10, or a NowCast given as `pm2_5` / `pm10`; this hour's mean for O3 (1h
    table), CO, SO2 and NO2."""
    exact: dict[str, float] = {}
    inputs: dict[str, float] = {}
    for pollutant, hours, given in (
        ("pm2_5", pm2_5_hours, pm2_5),
        ("pm10", pm10_hours, pm10),
    ):
        if given is not None and hours:
            raise ValueError(f"{pollutant}: give the hourly means or the NowCast, not both")
        value = given if given is not None else nowcast(hours)
        if value is not None:
            inputs[pollutant] = value
            exact[pollutant] = _required(sub_index_exact(pollutant, value))
    for pollutant, table, value in (
        ("o3", "o3_1h", o3),
        ("no2", "no2", no2),
        ("so2", "so2", so2),
        ("co", "co", co),
    ):
        if value is not None:
            inputs[pollutant] = value
            exact[pollutant] = _required(sub_index_exact(table, value))
    return _combine("hourly", exact, inputs)


def daily_aqi(
    *,
    pm2_5: float | None = None,
    pm10: float | None = None,
    o3_1h_max: float | None = None,
    o3_8h_max: float | None = None,
    co_1h_max: float | None = None,
    so2_1h_max: float | None = None,
    no2_1h_max: float | None = None,
) -> AqiResult:
    """AQI^d (section 2.2.2): 24-hour means for PM2.5 and PM10; for O3 the larger index of the
    day's highest 1-hour mean (1h table) and highest 8-hour mean (8h table, skipped above
    400 µg/m³); the day's highest 1-hour mean for CO, SO2 and NO2."""
    exact: dict[str, float] = {}
    inputs: dict[str, float] = {}
    for pollutant, value in (("pm2_5", pm2_5), ("pm10", pm10)):
        if value is not None:
            inputs[pollutant] = value
            exact[pollutant] = _required(sub_index_exact(pollutant, value))
    o3_parts: list[float] = []
    if o3_1h_max is not None:
        inputs["o3_1h"] = o3_1h_max
        o3_parts.append(_required(sub_index_exact("o3_1h", o3_1h_max)))
    if o3_8h_max is not None:
        inputs["o3_8h"] = o3_8h_max
        eight = sub_index_exact("o3_8h", o3_8h_max)
        if eight is not None:
            o3_parts.append(eight)
    if o3_parts:
        exact["o3"] = max(o3_parts)
    for pollutant, value in (("no2", no2_1h_max), ("so2", so2_1h_max), ("co", co_1h_max)):
        if value is not None:
            inputs[pollutant] = value
            exact[pollutant] = _required(sub_index_exact(pollutant, value))
    return _combine("daily", exact, inputs)


def daily_from_hours(
    day: Mapping[str, Sequence[float | None]],
    *,
    o3_before: Sequence[float | None] = (),
    min_coverage: float = 0.75,
) -> AqiResult:
    """AQI^d from one day's hourly means (oldest first: the hours ending 01:00 to 24:00).

    `o3_before` are the 7 hourly O3 means before the day, so that each of the day's 24
    8-hour means can be formed (the decision's worked example does the same). A 24-hour or
    8-hour mean needs `min_coverage` of its hours; a day maximum needs one hour."""

    def hours(p: str) -> list[float | None]:
        return list(day.get(p, ()))

    o3 = list(o3_before[-7:]) + hours("o3")
    o3_present = [v for v in hours("o3") if v is not None]
    return daily_aqi(
        pm2_5=mean_if_covered(hours("pm2_5"), min_coverage=min_coverage),
        pm10=mean_if_covered(hours("pm10"), min_coverage=min_coverage),
        o3_1h_max=max(o3_present) if o3_present else None,
        o3_8h_max=max_8h_mean(o3, first_end=len(o3) - len(hours("o3")), min_coverage=min_coverage),
        co_1h_max=_day_max(hours("co")),
        so2_1h_max=_day_max(hours("so2")),
        no2_1h_max=_day_max(hours("no2")),
    )


def _day_max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _required(value: float | None) -> float:
    if value is None:  # only the O3 8h table has a gap, and it is handled by the caller
        raise AssertionError("sub-index missing for a table without a gap")
    return value
