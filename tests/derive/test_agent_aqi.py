"""End to end: the agent with a `file` sensor fed a scripted PM2.5 series, its clock
fast-forwarded hour by hour, commits the right vn_aqi_hourly readings to its outbox, and
each one validates against the contract's schema."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from edge_agent.app import run_agent
from edge_agent.config import load_settings
from edge_agent.contract import utc_iso
from edge_agent.derive.vn_aqi import hourly_aqi
from edge_agent.errors import StorageError
from edge_agent.outbox import OutboxReader
from tests.sync.schema import validate

from .conftest import DAY_START, HOUR, Clock

# One value per hour (µg/m³); None: the sensor gives only out-of-range values that hour, so
# the hour has no usable reading and must be stated as missing, never filled.
SERIES: list[float | None] = [12, 22, 32, 42, 52, None, 80, 92, 62, 42, 32, None, None, 12]
BAD = "-1"  # outside pm2_5's plausible range: a 'bad' reading, which VN_AQI never uses


class Outbox:
    """The agent's outbox file, read as the agent writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.envelopes: list[dict[str, Any]] = []
        self._seq = 0
        self._reader: OutboxReader | None = None

    def refresh(self) -> None:
        if self._reader is None:
            try:
                self._reader = OutboxReader(self.path)
            except StorageError:
                return  # the agent has not created it yet
        for row in self._reader.export(self._seq):
            self.envelopes.append(json.loads(row.payload))
            self._seq = row.seq

    def readings(self, quantity: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.envelopes
            if e["kind"] == "reading" and e["data"]["quantity"] == quantity
        ]

    async def wait_for(self, quantity: str, ts: float, value: float | None) -> None:
        """Until a reading of `quantity` stamped `ts` with `value` (None: a bad one) is in."""
        stamp = utc_iso(ts)
        async with asyncio.timeout(30):
            while True:
                self.refresh()
                if any(
                    e["ts"] == stamp and e["data"]["value"] == value
                    for e in self.readings(quantity)
                ):
                    return
                await asyncio.sleep(0.01)

    async def wait_count(self, quantity: str, count: int) -> None:
        async with asyncio.timeout(30):
            while len(self.readings(quantity)) < count:
                await asyncio.sleep(0.01)
                self.refresh()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # the sensor never reads half a value


@pytest.mark.asyncio
async def test_scripted_pm2_5_series_gives_the_right_hourly_aqi(tmp_path: Path) -> None:
    value_file = tmp_path / "pm25"
    write(value_file, BAD)
    state = tmp_path / "state"
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f'cameras = []\n[paths]\nstate_dir = "{state}"\n[mqtt]\nenabled = false\n'
        "[web]\nenabled = false\n"
        '[[sensors]]\nkind = "file"\nname = "aq-1"\nquantity = "pm2_5"\nunit = "ug/m3"\n'
        f'path = "{value_file}"\ninterval_s = 0.05\nbackoff_max_s = 0.1\n'
        '[aqi]\nenabled = true\nsensors = ["aq-1"]\ngrace_s = 60\n'
    )
    clock = Clock(DAY_START + 61)
    outbox = Outbox(state / "outbox.sqlite3")
    agent = asyncio.create_task(run_agent(load_settings(config), clock=clock))
    try:
        await outbox.wait_for("pm2_5", clock.now, None)  # the agent runs and reads
        for hour, value in enumerate(SERIES):
            # Between two hours the sensor reads a bad value, so no reading of one hour's
            # value can be stamped with the next hour's time.
            clock.now = DAY_START + hour * HOUR + 1200
            if value is None:
                await outbox.wait_for("pm2_5", clock.now, None)
                continue
            write(value_file, str(value))
            await outbox.wait_for("pm2_5", clock.now, float(value))
            write(value_file, BAD)
            await outbox.wait_for("pm2_5", clock.now, None)
        clock.now = DAY_START + len(SERIES) * HOUR + 1200
        await outbox.wait_count("vn_aqi_hourly", len(SERIES))
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
        code = await agent
        outbox.close()
    assert code == 0

    envelopes = outbox.readings("vn_aqi_hourly")
    for envelope in envelopes:
        validate("envelope", envelope)
    got = {e["ts"]: e["data"] for e in envelopes}
    assert list(got) == [utc_iso(DAY_START + (h + 1) * HOUR) for h in range(len(SERIES))]
    for hour in range(len(SERIES)):
        recent_first = SERIES[max(0, hour - 11) : hour + 1][::-1]
        expected = hourly_aqi(pm2_5_hours=[None if v is None else float(v) for v in recent_first])
        data = got[utc_iso(DAY_START + (hour + 1) * HOUR)]
        assert data["value"] == expected.aqi, f"hour {hour}"
        assert data["sensor"] == "aqi" and data["unit"] == "1"
        if expected.aqi is not None:
            assert data["category"] == expected.fields()["category"]
            assert data["color"] == expected.fields()["color"]
    # by hand: hour 1, NowCast of [22, 12] (w* = 0.545): (22 + 0.545*12)/1.545 = 18.47 -> 37
    assert got[utc_iso(DAY_START + 2 * HOUR)]["value"] == 37
    # hour 5 is missing, c2 = 52 and c3 = 42 are there: w* = 12/52 < 0.5, so the missing hour
    # weighs nothing in sum(0.5^i c_i) = 13 + 5.25 + 2 + 0.6875 + 0.1875 = 21.125 -> 42
    hour5 = got[utc_iso(DAY_START + 6 * HOUR)]
    assert (hour5["value"], hour5["inputs"]) == (42, {"pm2_5": 21.12})
    assert hour5["missing_hours"]["pm2_5"][0] == utc_iso(DAY_START + 6 * HOUR)
    # hours 11 and 12 missing: at hour 12 only c3 of the last three is there -> no index
    hour12 = got[utc_iso(DAY_START + 13 * HOUR)]
    assert hour12["value"] is None and hour12["quality"] == "bad"
    assert hour12["missing_hours"]["pm2_5"][:2] == [
        utc_iso(DAY_START + 13 * HOUR),
        utc_iso(DAY_START + 12 * HOUR),
    ]
    # hour 0: a single hour of data is not enough either
    assert got[utc_iso(DAY_START + HOUR)]["value"] is None
