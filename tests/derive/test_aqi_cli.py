"""`edge-agent aqi`: hourly means on the command line or in a CSV, text or JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edge_agent.cli import main
from tests.conftest import agent_command, agent_env

NOWCAST_90 = "60,30,30,30,30,30,30,30,30,30,30,30"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["aqi", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_issue_examples_as_a_command() -> None:
    result = subprocess.run(
        agent_command("aqi", "--pm25-hours", NOWCAST_90),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "VN_AQI giờ (hourly): 90 Trung bình (trung_binh), RGB 255,255,0; dominant pm2_5"
    )
    assert "pm2_5  NowCast 44.99 µg/m³ -> 90" in result.stdout


def test_daily_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--pm25", "35", "--pm10", "80", "--daily", "--json")
    assert code == 0
    assert json.loads(out) == {
        "period": "daily",
        "aqi": 70,  # PM2.5 35 -> 70, PM10 80 -> 65
        "category": "trung_binh",
        "color": [255, 255, 0],
        "label_vi": "Trung bình",
        "dominant": "pm2_5",
        "sub_indices": {"pm2_5": 70, "pm10": 65},
        "inputs": {"pm2_5": 35.0, "pm10": 80.0},
    }


def test_the_decisions_example(capsys: pytest.CaptureFixture[str]) -> None:
    hours = "20.6,19.6,22.4,20.3,16.5,19.0,16.5,19.5,23.5,20.5,24.7,26.9"
    code, out, _ = run(capsys, "--pm25-hours", hours, "--o3", "136.1", "--no2", "118.7", "--json")
    assert code == 0
    assert json.loads(out)["sub_indices"] == {"pm2_5": 41, "o3": 43, "no2": 59}
    code, out, _ = run(
        capsys, "--daily", "--pm25", "55.7", "--o3", "114.6", "--o3-8h", "89.3", "--no2", "130.8"
    )
    assert code == 0 and out.startswith("VN_AQI ngày (daily): 110 Kém (kem), RGB 255,126,0")
    assert "o3     max 1-h 114.60, max 8-h 89.30 µg/m³ -> 45" in out


def test_missing_hours_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--pm25-hours", ",30,30", "--json")  # c1 missing: 2 of 3
    assert code == 0 and json.loads(out)["aqi"] == 60
    code, _, err = run(capsys, "--pm25-hours", ",,30")
    assert code == 1 and "2 of the last 3" in err
    code, _, err = run(capsys, "--o3", "100")
    assert code == 1 and "VN_AQI requires one" in err
    code, _, err = run(capsys, "--pm25", "35", "--pm25-hours", "35,35")
    assert code == 1 and "not both" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["aqi", "--pm25", "-3"])
    assert exit_info.value.code == 2
    assert "not a concentration" in capsys.readouterr().err


def test_csv_hourly_and_daily(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["time,pm25,no2"]
    # a day of hours ending 01:00 .. 24:00 local, PM2.5 40, one hour missing, NO2 peak 250
    for hour in range(1, 25):
        end = f"2026-11-27T{hour:02d}:00:00" if hour < 24 else "2026-11-28T00:00:00"
        pm = "" if hour == 5 else "40"
        no2 = "250" if hour == 12 else "50"
        rows.append(f"{end},{pm},{no2}")
    csv = tmp_path / "hours.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "--csv", str(csv), "--json")
    hourly = json.loads(out)
    assert code == 0 and len(hourly) == 24
    assert hourly[0]["aqi"] is None  # one hour: no NowCast yet
    assert hourly[1]["aqi"] == 80  # NowCast of 40, 40
    assert hourly[11]["dominant"] == "no2" and hourly[11]["sub_indices"]["no2"] == 105
    code, out, _ = run(capsys, "--csv", str(csv), "--daily", "--json")
    (daily,) = json.loads(out)
    assert daily["day"] == "2026-11-27"
    assert daily["inputs"] == {"pm2_5": 40.0, "no2": 250.0}
    assert (daily["aqi"], daily["dominant"]) == (105, "no2")
    bad = tmp_path / "bad.csv"
    bad.write_text("pm25,wind\n3,4\n", encoding="utf-8")
    code, _, err = run(capsys, "--csv", str(bad))
    assert code == 1 and "columns ['wind'] not known" in err
    bad.write_text("pm25\nabc\n", encoding="utf-8")
    code, _, err = run(capsys, "--csv", str(bad))
    assert code == 1 and f"{bad}:2" in err and "'abc' is not a number" in err
