"""The explicit driver registry: `kind` → a function that builds the driver."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.config.sensors import SimulatedSensor, SystemSensor
from edge_agent.sensors.base import Driver


def _simulated(config: SimulatedSensor, state_dir: Path) -> Driver:
    from edge_agent.sensors.simulated import SimulatedDriver

    return SimulatedDriver(config)


def _system(config: SystemSensor, state_dir: Path) -> Driver:
    from edge_agent.sensors.system import SystemDriver

    return SystemDriver(config, state_dir=state_dir)


DRIVERS: dict[str, Callable[[Any, Path], Driver]] = {
    "simulated": _simulated,
    "system": _system,
}


def build_driver(config: Any, *, state_dir: Path) -> Driver:
    """Build the driver for one sensor entry (hardware libraries are imported here, lazily)."""
    return DRIVERS[config.kind](config, state_dir)
