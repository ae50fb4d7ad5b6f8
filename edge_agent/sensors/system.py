"""Host health as readings: CPU, load, memory, disk of the state dir, temperature, uptime,
network counters."""

from __future__ import annotations

from pathlib import Path

import psutil

from edge_agent.config.sensors import SystemSensor
from edge_agent.host import host_snapshot
from edge_agent.sensors.base import Sample

QUANTITIES: dict[str, tuple[str, str]] = {
    "cpu_percent": ("cpu_usage", "%"),
    "load_1m": ("load_1m", "1"),
    "memory_used_percent": ("memory_usage", "%"),
    "disk_used_percent": ("disk_usage", "%"),
    "disk_free_bytes": ("disk_free", "By"),
    "cpu_temperature_c": ("cpu_temperature", "Cel"),
    "uptime_s": ("uptime", "s"),
}


class SystemDriver:
    def __init__(self, config: SystemSensor, *, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir

    def read(self) -> list[Sample]:
        facts = host_snapshot(self.state_dir)
        samples = [
            Sample(quantity, float(facts[key]), unit)
            for key, (quantity, unit) in QUANTITIES.items()
            if key in facts
        ]
        net = psutil.net_io_counters()
        if net is not None:  # None on hosts without network interfaces
            samples += [
                Sample("net_bytes_sent", float(net.bytes_sent), "By"),
                Sample("net_bytes_recv", float(net.bytes_recv), "By"),
                Sample("net_errors", float(net.errin + net.errout), "1"),
            ]
        return samples

    def close(self) -> None:
        pass
