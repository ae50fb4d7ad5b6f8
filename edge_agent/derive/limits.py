"""Limit alerts: the ambient limits of QCVN 05:2023/BTNMT as defaults, and the hysteresis
that keeps a mean at the border from raising and clearing an alert every period."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from edge_agent.config.environment import LimitRule, LimitsConfig
from edge_agent.derive.concentration import AIR_POLLUTANTS, UG_M3, to_ug_m3
from edge_agent.errors import ConfigError

QCVN = "QCVN 05:2023/BTNMT"
PM2_5_STRICTER_FROM = dt.date(2026, 1, 1)

# QCVN 05:2023/BTNMT (Circular 01/2023/TT-BTNMT), Table 1 "Giá trị giới hạn tối đa các thông
# số cơ bản trong không khí xung quanh", µg/Nm³: (pollutant, period) -> limit. The PM2.5
# 24-hour limit is 50 and, from 1 January 2026 (note (*) of the table), 45. The annual means
# (SO2 50, NO2 40, TSP 100, PM10 50, PM2.5 25) are a yearly statistic for reports, not an
# alert a node raises, and are left out.
QCVN_05_2023: dict[tuple[str, str], float] = {
    ("so2", "1h"): 350.0,
    ("so2", "24h"): 125.0,
    ("co", "1h"): 30_000.0,
    ("co", "8h"): 10_000.0,
    ("no2", "1h"): 200.0,
    ("no2", "24h"): 100.0,
    ("o3", "1h"): 200.0,
    ("o3", "8h"): 120.0,
    ("tsp", "1h"): 300.0,
    ("tsp", "24h"): 200.0,
    ("pm10", "24h"): 100.0,
    ("pm2_5", "24h"): 50.0,
}

PERIOD_HOURS = {"1h": 1, "8h": 8, "24h": 24}


@dataclass(frozen=True)
class Limit:
    """One rule in force: quantity, averaging period, limit in `unit`, and its source."""

    quantity: str
    pollutant: str  # the molecule, for unit conversion ("" when not an air pollutant)
    period: str
    limit: float
    unit: str
    standard: str

    def value_on(self, day: dt.date) -> float:
        """The limit that applies to a period ending on `day` (local date)."""
        if self.standard == QCVN and self.pollutant == "pm2_5" and self.period == "24h":
            return 45.0 if day >= PM2_5_STRICTER_FROM else 50.0
        return self.limit


def resolve(config: LimitsConfig, pollutant_of: Mapping[str, str]) -> list[Limit]:
    """The rules in force: the QCVN defaults (under the configured quantity names), then the
    configured rules, which replace a default of the same quantity and period.

    `pollutant_of` maps reading quantities to pollutants (from `[aqi].quantities`)."""
    quantity_of = {p: q for q, p in pollutant_of.items()}
    rules: dict[tuple[str, str], Limit] = {}
    if config.qcvn_defaults:
        for (pollutant, period), value in QCVN_05_2023.items():
            quantity = quantity_of.get(pollutant, pollutant)
            rules[(quantity, period)] = Limit(quantity, pollutant, period, value, UG_M3, QCVN)
    for index, rule in enumerate(config.rules):
        key = (rule.quantity, rule.period)
        if not rule.enabled:
            rules.pop(key, None)
            continue
        rules[key] = _configured(rule, pollutant_of, f"limits.rules[{index}]")
    return list(rules.values())


def _configured(rule: LimitRule, pollutant_of: Mapping[str, str], key: str) -> Limit:
    pollutant = pollutant_of.get(rule.quantity, rule.quantity)
    if pollutant in AIR_POLLUTANTS:
        limit = to_ug_m3(pollutant, rule.limit, rule.unit)
        if limit is None:
            raise ConfigError(
                [f"{key}.unit: {rule.unit!r} does not convert to µg/m³ for {pollutant}"]
            )
        return Limit(rule.quantity, pollutant, rule.period, limit, UG_M3, "configured")
    return Limit(rule.quantity, "", rule.period, rule.limit, rule.unit, "configured")


def step(active: bool, value: float, limit: float, hysteresis: float) -> bool:
    """The alert state after one period's mean: it becomes active above the limit and clears
    only at or below limit * (1 - hysteresis); in between it stays as it was."""
    if not active:
        return value > limit
    return value > limit * (1.0 - hysteresis)
