"""Limit alerts: QCVN 05:2023/BTNMT defaults; enter, stay, leave; border noise; restart."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from edge_agent.config.environment import LimitsConfig
from edge_agent.contract import utc_iso
from edge_agent.derive.limits import QCVN, resolve, step
from edge_agent.errors import ConfigError
from tests.sync.schema import validate

from .conftest import DAY_START, HOUR, Clock, Events, feed_hour, running_derive

POLLUTANTS = {"pm2_5": "pm2_5", "pm10": "pm10", "o3": "o3", "co": "co", "so2": "so2"}
HOURLY_PM = {"enabled": True, "rules": [{"quantity": "pm2_5", "period": "1h", "limit": 50}]}


def test_qcvn_05_2023_table_1_defaults() -> None:
    limits = {(r.quantity, r.period): r for r in resolve(LimitsConfig(enabled=True), POLLUTANTS)}
    values = {key: rule.limit for key, rule in limits.items()}
    assert values == {
        ("so2", "1h"): 350,
        ("so2", "24h"): 125,
        ("co", "1h"): 30_000,
        ("co", "8h"): 10_000,
        ("no2", "1h"): 200,
        ("no2", "24h"): 100,
        ("o3", "1h"): 200,
        ("o3", "8h"): 120,
        ("tsp", "1h"): 300,
        ("tsp", "24h"): 200,
        ("pm10", "24h"): 100,
        ("pm2_5", "24h"): 50,
    }
    pm = limits[("pm2_5", "24h")]
    assert pm.standard == QCVN and pm.unit == "ug/m3"
    # note (*) of Table 1: 45 µg/Nm³ from 1 January 2026
    assert pm.value_on(dt.date(2025, 12, 31)) == 50
    assert pm.value_on(dt.date(2026, 1, 1)) == 45


def test_configured_rules_replace_convert_and_switch_off() -> None:
    config = LimitsConfig(
        enabled=True,
        rules=[
            {"quantity": "co", "period": "1h", "limit": 20, "unit": "mg/m3"},
            {"quantity": "so2", "period": "24h", "limit": 1, "enabled": False},
            {"quantity": "cod", "period": "1h", "limit": 75, "unit": "mg/L"},
        ],
    )
    limits = {(r.quantity, r.period): r for r in resolve(config, POLLUTANTS)}
    assert limits[("co", "1h")].limit == 20_000 and limits[("co", "1h")].standard == "configured"
    assert ("so2", "24h") not in limits
    assert (limits[("cod", "1h")].limit, limits[("cod", "1h")].unit) == (75, "mg/L")
    bad = LimitsConfig(
        enabled=True, rules=[{"quantity": "pm10", "period": "1h", "limit": 1, "unit": "ppb"}]
    )
    with pytest.raises(ConfigError, match=r"limits\.rules\[0\]\.unit"):
        resolve(bad, POLLUTANTS)


def test_hysteresis_step() -> None:
    assert step(False, 50.0, 50.0, 0.05) is False  # at the limit is not above it
    assert step(False, 50.1, 50.0, 0.05) is True
    assert step(True, 48.0, 50.0, 0.05) is True  # under the limit, not yet 5 % under
    assert step(True, 47.5, 50.0, 0.05) is False
    assert step(False, 49.0, 50.0, 0.05) is False


async def run_hours(tmp_path: Path, values: list[float | None], **limits: object) -> Events:
    clock, events = Clock(), Events()
    async with running_derive(
        tmp_path, clock, events, aqi={"enabled": False}, limits=HOURLY_PM | limits
    ) as derive:
        for hour, value in enumerate(values):
            await feed_hour(
                derive, clock, events, DAY_START + hour * HOUR, {"pm2_5": value}, expect=""
            )
            await events.wait_for(
                lambda h=hour: derive.hours.last_closed == DAY_START + (h + 1) * HOUR
            )
    return events


@pytest.mark.asyncio
async def test_enter_stay_and_leave(tmp_path: Path) -> None:
    events = await run_hours(tmp_path, [30, 70, 80, 60, 40, 30])
    active, cleared = events.alerts()
    assert active == {
        "alert": "limit_exceeded",
        "severity": "warning",
        "state": "active",
        "sensor": "aq-1",
        "quantity": "pm2_5",
        "period": "1h",
        "value": 70.0,
        "limit": 50,
        "clear_at": 47.5,
        "unit": "ug/m3",
        "standard": "configured",
        "from": utc_iso(DAY_START + HOUR),
        "to": utc_iso(DAY_START + 2 * HOUR),
    }
    assert cleared["state"] == "cleared" and cleared["severity"] == "info"
    assert (cleared["value"], cleared["to"]) == (40.0, utc_iso(DAY_START + 5 * HOUR))
    assert cleared["since"] == utc_iso(DAY_START + 2 * HOUR)
    for kind, data, stream, ts in events.items:
        assert stream == "alert"
        validate(
            "envelope",
            {
                "v": 1,
                "node": "n",
                "epoch": "e",
                "seq": 1,
                "ts": utc_iso(ts),
                "kind": kind,
                "data": data,
            },
        )


@pytest.mark.asyncio
async def test_border_noise_does_not_flap(tmp_path: Path) -> None:
    # around the limit of 50: in at 50.6, never out until 47.5 or less, in again at 50.2
    noisy = [49.6, 50.6, 49.4, 50.3, 48.1, 50.9, 47.9, 47.5, 49.9, 50.0, 50.2, 49.8]
    events = await run_hours(tmp_path, noisy)
    states = [(a["state"], a["value"]) for a in events.alerts()]
    assert states == [("active", 50.6), ("cleared", 47.5), ("active", 50.2)]


@pytest.mark.asyncio
async def test_a_missing_hour_neither_raises_nor_clears(tmp_path: Path) -> None:
    events = await run_hours(tmp_path, [70, None, None, 40])
    assert [a["state"] for a in events.alerts()] == ["active", "cleared"]
    assert events.alerts()[1]["to"] == utc_iso(DAY_START + 4 * HOUR)


@pytest.mark.asyncio
async def test_an_active_alert_survives_a_restart(tmp_path: Path) -> None:
    first = await run_hours(tmp_path, [70])
    assert [a["state"] for a in first.alerts()] == ["active"]
    clock, events = Clock(DAY_START + HOUR + 61), Events()
    async with running_derive(
        tmp_path, clock, events, aqi={"enabled": False}, limits=HOURLY_PM
    ) as derive:
        await feed_hour(derive, clock, events, DAY_START + HOUR, {"pm2_5": 80.0}, expect="")
        await feed_hour(derive, clock, events, DAY_START + 2 * HOUR, {"pm2_5": 30.0}, expect="")
        await events.wait_for(lambda: len(events.alerts()) == 1)
    # no second "active" after the restart; the return is reported against the first
    (cleared,) = events.alerts()
    assert cleared["state"] == "cleared" and cleared["since"] == utc_iso(DAY_START + HOUR)


@pytest.mark.asyncio
async def test_qcvn_daily_pm2_5_limit(tmp_path: Path) -> None:
    clock, events = Clock(), Events()
    async with running_derive(
        tmp_path, clock, events, aqi={"enabled": False}, limits={"enabled": True}
    ) as derive:
        for hour in range(24):
            value = 60.0 if hour < 18 else None  # 18 of 24 hours: enough for a 24-hour mean
            await feed_hour(
                derive, clock, events, DAY_START + hour * HOUR, {"pm2_5": value}, expect=""
            )
        await events.wait_for(lambda: len(events.alerts()) == 1)
    (alert,) = events.alerts()
    assert (alert["period"], alert["value"], alert["limit"]) == ("24h", 60.0, 45.0)  # 2026
    assert alert["standard"] == "QCVN 05:2023/BTNMT"
    assert (alert["from"], alert["to"]) == (utc_iso(DAY_START), utc_iso(DAY_START + 24 * HOUR))
