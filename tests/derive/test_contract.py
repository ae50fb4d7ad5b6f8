"""The contract's schema takes the derived readings and alerts, and refuses malformed ones."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import ValidationError

from edge_agent.app import Agent
from edge_agent.config import Settings
from tests.sync.schema import validate

PERIOD = {"from": "2026-11-27T00:00:00.000Z", "to": "2026-11-27T01:00:00.000Z"}
AQI = {
    "sensor": "aqi",
    "quantity": "vn_aqi_hourly",
    "value": 87,
    "unit": "1",
    "quality": "ok",
    "category": "trung_binh",
    "color": [255, 255, 0],
    "label_vi": "Trung bình",
    "dominant": "pm2_5",
    "sub_indices": {"pm2_5": 87},
    "inputs": {"pm2_5": 43.5},
    "period": PERIOD,
}
ALERT = {
    "alert": "limit_exceeded",
    "severity": "warning",
    "state": "active",
    "sensor": "aq-1",
    "quantity": "pm2_5",
    "period": "24h",
    "value": 60.0,
    "limit": 45.0,
    "clear_at": 42.75,
    "unit": "ug/m3",
    "standard": "QCVN 05:2023/BTNMT",
    **PERIOD,
}


def envelope(data: dict[str, Any], kind: str = "reading") -> dict[str, Any]:
    ts = "2026-11-27T01:00:00.000Z"
    return {"v": 1, "node": "n", "epoch": "e", "seq": 1, "ts": ts, "kind": kind, "data": data}


def test_good_ones_validate() -> None:
    validate("envelope", envelope(AQI))
    validate("envelope", envelope(ALERT, "alert"))
    status = {"sensor": "ww", "quantity": "cod", "value": None, "unit": "mg/L", "quality": "bad"}
    validate("envelope", envelope(status | {"raw": "98.5", "status": "calibrating"}))


@pytest.mark.parametrize(
    "change",
    [
        {"category": None},  # a value needs its category ...
        {"color": [255, 255]},  # ... a colour of three channels
        {"value": 87.5},  # an integer index
        {"value": 501},
        {"unit": "ug/m3"},
        {"category": "good"},
        {"sub_indices": None},
        {"dominant": "dust"},
    ],
)
def test_malformed_aqi_readings_are_refused(change: dict[str, Any]) -> None:
    data = {k: v for k, v in (AQI | change).items() if v is not None}
    with pytest.raises(ValidationError):
        validate("envelope", envelope(data))


@pytest.mark.parametrize(
    "change", [{"state": None}, {"period": "2h"}, {"severity": "critical"}, {"from": "yesterday"}]
)
def test_malformed_limit_alerts_are_refused(change: dict[str, Any]) -> None:
    data = {k: v for k, v in (ALERT | change).items() if v is not None}
    with pytest.raises(ValidationError):
        validate("envelope", envelope(data, "alert"))


def test_the_agent_wires_the_derived_streams_before_the_sensors(tmp_path: Any) -> None:
    settings = Settings(
        paths={"state_dir": tmp_path},
        cameras=[],
        mqtt={"enabled": False},
        web={"enabled": False},
        aqi={"enabled": True},
        station_export={
            "enabled": True,
            "province": "HN",
            "facility": "ABCD",
            "host": "127.0.0.1",
            "stations": [{"code": "NUO001", "parameters": [{"quantity": "cod"}]}],
        },
    )
    agent = Agent(settings)
    names = [getattr(c, "name", type(c).__name__) for c in agent.components]
    assert names[:5] == ["outbox", "audit", "host", "derive", "station_export"]
    assert all(n.startswith("sensor:") for n in names[5:])
    assert agent.taps == [agent.derive.offer, agent.station_export.offer]
    plain = Agent(Settings(paths={"state_dir": tmp_path}, cameras=[], mqtt={"enabled": False}))
    assert "derive" not in [getattr(c, "name", "") for c in plain.components] and not plain.taps
