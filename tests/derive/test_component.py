"""The derived stream: hourly means from offered readings, vn_aqi_hourly and vn_aqi_daily
events on an injected clock, missing hours stated, state across a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_agent.contract import Kind, utc_iso
from edge_agent.derive.vn_aqi import nowcast
from tests.sync.schema import validate

from .conftest import DAY_START, HOUR, Clock, Events, feed_hour, reading, running_derive


def envelope(data: dict[str, object], ts: float, kind: str = "reading") -> dict[str, object]:
    return {
        "v": 1,
        "node": "n",
        "epoch": "e",
        "seq": 1,
        "ts": utc_iso(ts),
        "kind": kind,
        "data": data,
    }


@pytest.mark.asyncio
async def test_hourly_aqi_from_hourly_means(tmp_path: Path) -> None:
    clock, events = Clock(), Events()
    async with running_derive(tmp_path, clock, events) as derive:
        # two readings in the first hour: its mean is 40; the second hour has one of 60
        derive.offer(Kind.READING, reading("pm2_5", 30.0), "aq-1", DAY_START + 60)
        await feed_hour(derive, clock, events, DAY_START, {"pm2_5": 50.0, "pm10": 80.0})
        await feed_hour(derive, clock, events, DAY_START + HOUR, {"pm2_5": 60.0})
    first, second = events.readings("vn_aqi_hourly")
    # hour 1: only one hour of data; NowCast needs 2 of the last 3 -> no index, stated
    assert first["value"] is None and first["quality"] == "bad"
    assert "2 of the last 3" in first["reason"]
    assert first["period"] == {"from": utc_iso(DAY_START), "to": utc_iso(DAY_START + HOUR)}
    # hour 2: PM2.5 hours 60 and 40 (w* = 0.667): NowCast (60 + 0.667*40) / 1.667 = 52
    # -> 100 + (52 - 50) * 50/30 = 103.3 -> 103. PM10 has 1 of its last 3 hours: none.
    assert nowcast([60.0, 40.0]) == pytest.approx(52.0)
    assert second == {
        "sensor": "aqi",
        "quantity": "vn_aqi_hourly",
        "value": 103,
        "unit": "1",
        "quality": "ok",
        "category": "kem",
        "color": [255, 126, 0],
        "label_vi": "Kém",
        "dominant": "pm2_5",
        "sub_indices": {"pm2_5": 103},
        "inputs": {"pm2_5": 52.0},
        "period": {"from": utc_iso(DAY_START + HOUR), "to": utc_iso(DAY_START + 2 * HOUR)},
        "missing_hours": {
            "pm2_5": [utc_iso(DAY_START - i * HOUR) for i in range(10)],
            "pm10": [utc_iso(DAY_START + 2 * HOUR)]
            + [utc_iso(DAY_START - i * HOUR) for i in range(10)],
        },
    }
    for data in (first, second):
        validate("envelope", envelope(data, DAY_START + 2 * HOUR))


@pytest.mark.asyncio
async def test_bad_late_and_foreign_readings_are_not_used(tmp_path: Path) -> None:
    clock, events = Clock(), Events()
    async with running_derive(tmp_path, clock, events, aqi={"sensors": ["aq-1"]}) as derive:
        offer = derive.offer
        offer(Kind.READING, reading("pm2_5", None, raw="nan"), "aq-1", DAY_START + 10)
        offer(Kind.READING, reading("pm2_5", 999.0, sensor="other"), "other", DAY_START + 10)
        offer(Kind.READING, reading("pm2_5", 30.0, unit="furlongs"), "aq-1", DAY_START + 10)
        offer(Kind.READING, {"sensor": "aq-1", "quantity": "pm2_5", "value": "x"}, "s", 0.0)
        offer(Kind.READING, reading("temperature", 30.0, unit="Cel"), "aq-1", DAY_START + 10)
        offer(Kind.CAMERA, {"camera": "gate"}, "gate", DAY_START + 10)
        # a 1-minute aggregate stamped 01:00:00 belongs to the hour ending 01:00
        aggregate = reading("pm2_5", 20.0, stats={"window_s": 60, "count": 6})
        offer(Kind.READING, aggregate, "aq-1", DAY_START + HOUR)
        await feed_hour(derive, clock, events, DAY_START, {"pm2_5": 40.0})
        # the closed hour takes no more readings: late, counted, not used
        offer(Kind.READING, reading("pm2_5", 500.0), "aq-1", DAY_START + 1800)
        await feed_hour(derive, clock, events, DAY_START + HOUR, {"pm2_5": 30.0})
        counters = derive.health.counters
    assert derive.hours.mean("aq-1", "pm2_5", int(DAY_START + HOUR)) == pytest.approx(30.0)
    assert derive.hours.mean("other", "pm2_5", int(DAY_START + HOUR)) is None
    assert counters["bad_not_used"] == 2 and counters["unit_rejected"] == 1
    assert counters["late"] == 1 and counters["used"] == 3
    hourly = events.readings("vn_aqi_hourly")[-1]
    assert hourly["inputs"] == {"pm2_5": round(nowcast([30.0, 30.0]) or 0, 2)}


@pytest.mark.asyncio
async def test_gases_in_ppb_are_converted(tmp_path: Path) -> None:
    clock, events = Clock(), Events()
    async with running_derive(tmp_path, clock, events) as derive:
        await feed_hour(derive, clock, events, DAY_START, {"pm2_5": 10.0})
        derive.offer(Kind.READING, reading("no2", 100.0, unit="ppb"), "aq-1", DAY_START + HOUR + 60)
        await feed_hour(derive, clock, events, DAY_START + HOUR, {"pm2_5": 10.0})
    last = events.readings("vn_aqi_hourly")[-1]
    # 100 ppb NO2 at 25 °C = 100 * 46.01 / 24.45 = 188.18 µg/m³ -> 50 + 88.18/2 = 94.09 -> 94
    assert last["inputs"]["no2"] == pytest.approx(188.18, abs=0.01)
    assert last["sub_indices"] == {"pm2_5": 20, "no2": 94}
    assert (last["value"], last["dominant"], last["category"]) == (94, "no2", "trung_binh")


@pytest.mark.asyncio
async def test_daily_aqi_after_the_local_day(tmp_path: Path) -> None:
    clock, events = Clock(), Events()
    # 01:00 .. 24:00 local: PM2.5 20 for 6 hours, 80 for 4, 40 for 14 (mean 41.67 -> 83)
    day = [20.0] * 6 + [80.0] * 4 + [40.0] * 14
    async with running_derive(tmp_path, clock, events) as derive:
        for hour, value in enumerate(day[:-1]):
            await feed_hour(derive, clock, events, DAY_START + hour * HOUR, {"pm2_5": value})
        assert events.readings("vn_aqi_daily") == []
        await feed_hour(
            derive, clock, events, DAY_START + 23 * HOUR, {"pm2_5": day[-1]}, expect="vn_aqi_daily"
        )
    (daily,) = events.readings("vn_aqi_daily")
    assert daily["day"] == "2026-11-27"
    assert daily["period"] == {"from": utc_iso(DAY_START), "to": utc_iso(DAY_START + 24 * HOUR)}
    assert (daily["value"], daily["category"], daily["label_vi"]) == (
        83,
        "trung_binh",
        "Trung bình",
    )
    assert daily["inputs"] == {"pm2_5": 41.67}
    assert daily["hours"] == {"pm2_5": 24}
    ts = [t for k, d, _, t in events.items if d.get("quantity") == "vn_aqi_daily"]
    assert ts == [DAY_START + 24 * HOUR]
    validate("envelope", envelope(daily, ts[0]))


@pytest.mark.asyncio
async def test_state_survives_a_restart(tmp_path: Path) -> None:
    clock, events = Clock(), Events()
    async with running_derive(tmp_path, clock, events) as derive:
        await feed_hour(derive, clock, events, DAY_START, {"pm2_5": 40.0})
        await feed_hour(derive, clock, events, DAY_START + HOUR, {"pm2_5": 60.0})
        # half of the third hour, then the agent stops (its open sums are saved)
        derive.offer(Kind.READING, reading("pm2_5", 80.0), "aq-1", DAY_START + 2 * HOUR + 60)
    async with running_derive(tmp_path, clock, events) as derive:
        derive.offer(Kind.READING, reading("pm2_5", 100.0), "aq-1", DAY_START + 2 * HOUR + 900)
        clock.now = DAY_START + 3 * HOUR + 61
        await events.wait_for(lambda: len(events.readings("vn_aqi_hourly")) == 3)
    third = events.readings("vn_aqi_hourly")[-1]
    # hours 90 (80 and 100 across the restart), 60, 40: w* = 0.444 -> w = 1/2,
    # NowCast = 0.5*90 + 0.25*60 + 0.125*40 = 65 -> 100 + 15*50/30 = 125
    assert third["inputs"] == {"pm2_5": 65.0}
    assert third["value"] == 125


@pytest.mark.asyncio
async def test_hours_missed_while_stopped_are_stated(tmp_path: Path) -> None:
    clock, events = Clock(), Events()
    async with running_derive(tmp_path, clock, events) as derive:
        await feed_hour(derive, clock, events, DAY_START, {"pm2_5": 40.0})
    clock.now = DAY_START + 4 * HOUR + 61  # stopped for three hours
    async with running_derive(tmp_path, clock, events):
        await events.wait_for(lambda: len(events.readings("vn_aqi_hourly")) == 4)
    missed = events.readings("vn_aqi_hourly")[1:]
    assert [r["period"]["to"] for r in missed] == [utc_iso(DAY_START + h * HOUR) for h in (2, 3, 4)]
    assert missed[0]["value"] is None and missed[0]["missing_hours"]["pm2_5"][:2] == [
        utc_iso(DAY_START + 2 * HOUR),
        utc_iso(DAY_START + HOUR - HOUR),
    ]


@pytest.mark.asyncio
async def test_damaged_state_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "derive.sqlite3").write_bytes(b"not a database" * 100)
    clock, events = Clock(), Events()
    async with running_derive(tmp_path, clock, events) as derive:
        await feed_hour(derive, clock, events, DAY_START, {"pm2_5": 40.0})
    aside = await asyncio.to_thread(lambda: list(tmp_path.glob("derive.sqlite3.corrupt-*")))
    assert len(aside) == 1 and aside[0].read_bytes() == b"not a database" * 100
