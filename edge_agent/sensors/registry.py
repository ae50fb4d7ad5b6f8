"""The explicit driver registry: `kind` → a function that builds the driver.

Driver modules are imported inside these functions, so the configuration validates and the
agent runs without the optional libraries of drivers nobody configured.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.config.sensors import (
    FileSensor,
    HttpJsonSensor,
    ModbusSensor,
    Pms5003Sensor,
    Sds011Sensor,
    SimulatedSensor,
    SystemSensor,
    W1ThermSensor,
)
from edge_agent.sensors.base import Driver


def _simulated(config: SimulatedSensor, state_dir: Path) -> Driver:
    from edge_agent.sensors.simulated import SimulatedDriver

    return SimulatedDriver(config)


def _system(config: SystemSensor, state_dir: Path) -> Driver:
    from edge_agent.sensors.system import SystemDriver

    return SystemDriver(config, state_dir=state_dir)


def _modbus(config: ModbusSensor, state_dir: Path) -> Driver:
    from edge_agent.sensors.modbus import ModbusDriver

    return ModbusDriver(config)


def _pms5003(config: Pms5003Sensor, state_dir: Path) -> Driver:
    from edge_agent.sensors.particulate import Pms5003Parser, SerialFrameDriver

    return SerialFrameDriver(config, Pms5003Parser())


def _sds011(config: Sds011Sensor, state_dir: Path) -> Driver:
    from edge_agent.sensors.particulate import Sds011Parser, SerialFrameDriver

    return SerialFrameDriver(config, Sds011Parser())


def _http_json(config: HttpJsonSensor, state_dir: Path) -> Driver:
    from edge_agent.sensors.http_json import HttpJsonDriver

    return HttpJsonDriver(config)


def _w1_therm(config: W1ThermSensor, state_dir: Path) -> Driver:
    from edge_agent.sensors.onewire import W1ThermDriver

    return W1ThermDriver(config)


def _file(config: FileSensor, state_dir: Path) -> Driver:
    from edge_agent.sensors.onewire import FileDriver

    return FileDriver(config)


DRIVERS: dict[str, Callable[[Any, Path], Driver]] = {
    "simulated": _simulated,
    "system": _system,
    "modbus": _modbus,
    "pms5003": _pms5003,
    "sds011": _sds011,
    "http_json": _http_json,
    "w1_therm": _w1_therm,
    "file": _file,
}


def build_driver(config: Any, *, state_dir: Path) -> Driver:
    """Build the driver for one sensor entry.

    Raises `DependencyMissingError` (exit 78) naming the sensor, the library and the pip extra
    when the driver's optional library is not installed.
    """
    return DRIVERS[config.kind](config, state_dir)
