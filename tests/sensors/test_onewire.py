"""1-Wire DS18B20 `w1_slave` files and generic numeric files, laid out as sysfs does."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config.sensors import FileSensor, W1ThermSensor
from edge_agent.errors import SensorError
from edge_agent.sensors.registry import build_driver

GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
NEGATIVE = "5e ff 4b 46 7f ff 02 10 e1 : crc=e1 YES\n5e ff 4b 46 7f ff 02 10 e1 t=-10125\n"
BAD_CRC = "72 01 4b 46 7f ff 0e 10 57 : crc=ff NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
RESET = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"


@pytest.fixture
def w1_slave(tmp_path: Path) -> Path:
    device = tmp_path / "sys/bus/w1/devices/28-0316a2790aff"
    device.mkdir(parents=True)
    return device / "w1_slave"


def test_w1_therm_yes_no_and_missing(w1_slave: Path, tmp_path: Path) -> None:
    config = W1ThermSensor(kind="w1_therm", name="water-temp", path=w1_slave)
    driver = build_driver(config, state_dir=tmp_path)
    with pytest.raises(SensorError, match="does not exist"):
        driver.read()
    w1_slave.write_text(GOOD)
    [sample] = driver.read()
    assert (sample.quantity, sample.value, sample.unit) == ("temperature", 23.125, "Cel")
    w1_slave.write_text(NEGATIVE)
    assert driver.read()[0].value == -10.125
    w1_slave.write_text(BAD_CRC)
    with pytest.raises(SensorError, match="CRC"):
        driver.read()
    w1_slave.write_text(RESET)
    with pytest.raises(SensorError, match="power-on reset"):
        driver.read()
    w1_slave.write_text(GOOD.splitlines()[0])
    with pytest.raises(SensorError, match="incomplete"):
        driver.read()


def test_numeric_file(tmp_path: Path) -> None:
    path = tmp_path / "in_pressure_input"
    config = FileSensor(
        kind="file", name="baro", path=path, quantity="pressure", unit="hPa", scale=10.0
    )
    driver = build_driver(config, state_dir=tmp_path)
    path.write_text("101.325\n")
    [sample] = driver.read()
    assert (sample.quantity, sample.unit) == ("pressure", "hPa")
    assert sample.value == pytest.approx(1013.25)
    path.write_text("busy\n")
    with pytest.raises(SensorError, match="not a number"):
        driver.read()
