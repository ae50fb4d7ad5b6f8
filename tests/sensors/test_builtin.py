"""The embedded drivers: simulated values and faults, host health via psutil."""

from __future__ import annotations

import math
from pathlib import Path

from edge_agent.config.sensors import SimulatedSensor, SystemSensor
from edge_agent.errors import SensorError
from edge_agent.sensors.quality import DEFAULT_RANGES
from edge_agent.sensors.registry import build_driver


def test_simulated_values_are_plausible_with_units(tmp_path: Path) -> None:
    config = SimulatedSensor(kind="simulated", name="sim", seed=3, quantities=["pm2_5", "noise"])
    driver = build_driver(config, state_dir=tmp_path)
    for _ in range(50):
        for sample in driver.read():
            low, high = DEFAULT_RANGES[sample.quantity]
            assert low <= sample.value <= high
            assert sample.unit == {"pm2_5": "ug/m3", "noise": "dB"}[sample.quantity]


def test_simulated_faults_raise_or_give_nan(tmp_path: Path) -> None:
    config = SimulatedSensor(kind="simulated", name="sim", seed=5, fault_rate=0.5)
    driver = build_driver(config, state_dir=tmp_path)
    raised = nans = clean = 0
    for _ in range(200):
        try:
            values = [s.value for s in driver.read()]
        except SensorError:
            raised += 1
            continue
        if any(math.isnan(v) for v in values):
            nans += 1
        else:
            clean += 1
    assert raised and nans and clean


def test_system_reads_host_health(tmp_path: Path) -> None:
    driver = build_driver(SystemSensor(kind="system", name="host"), state_dir=tmp_path)
    samples = {s.quantity: s for s in driver.read()}
    assert {"cpu_usage", "memory_usage", "disk_usage", "uptime", "net_bytes_recv"} <= set(samples)
    assert samples["disk_usage"].unit == "%" and 0 <= samples["disk_usage"].value <= 100
    assert samples["uptime"].unit == "s" and samples["uptime"].value > 0
