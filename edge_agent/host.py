"""The host: a psutil snapshot taken off the event loop at most once a second, and the
`health` events that carry it to the IOC at the `health` priority.

A leaf like `health`: the `system` sensor driver reuses `host_snapshot()`, and the status
page and metrics read `HostMonitor.latest` (never psutil on the loop).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

log = logging.getLogger(__name__)

HealthSink = Callable[[dict[str, Any], float], Awaitable[None]]


def host_snapshot(state_dir: Path) -> dict[str, Any]:
    """CPU, memory, disk of the state dir, load, temperature, uptime and whether the clock
    is synchronised, for this host."""
    memory = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(str(state_dir))
        disk_facts: dict[str, Any] = {
            "disk_total_bytes": disk.total,
            "disk_free_bytes": disk.free,
            "disk_used_percent": disk.percent,
        }
    except OSError:
        disk_facts = {}
    facts: dict[str, Any] = {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count() or 1,
        "load_1m": os.getloadavg()[0],
        "memory_total_bytes": memory.total,
        "memory_used_percent": memory.percent,
        "uptime_s": time.time() - psutil.boot_time(),
        "process_rss_bytes": psutil.Process().memory_info().rss,
        **disk_facts,
    }
    temperature = cpu_temperature()
    if temperature is not None:
        facts["cpu_temperature_c"] = temperature
    synchronised = clock_synchronised()
    if synchronised is not None:
        facts["clock_synchronised"] = synchronised
    return facts


# adjtimex(2) returns the clock state; TIME_ERROR means the kernel's clock is not
# synchronised (STA_UNSYNC: no NTP client such as chrony or systemd-timesyncd keeps it).
TIME_ERROR = 5
TIMEX_BYTES = 512  # larger than struct timex on every Linux architecture


@functools.cache
def _adjtimex() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def clock_synchronised() -> bool | None:
    """Whether an NTP client keeps the clock synchronised (None where it cannot be told)."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    timex = ctypes.create_string_buffer(TIMEX_BYTES)  # modes = 0: read only, no privilege
    state = adjtimex(timex)
    if state < 0:
        return None
    return bool(state != TIME_ERROR)


def cpu_temperature() -> float | None:
    sensors = getattr(psutil, "sensors_temperatures", None)
    if sensors is None:
        return None
    try:
        readings = sensors()
    except OSError:
        return None
    for entries in readings.values():
        for entry in entries:
            if entry.current is not None:
                return float(entry.current)
    return None


class HostMonitor:
    """Refreshes the host snapshot every `refresh_s` on a thread, and hands one to `sink`
    as a `health` event every `report_s` (0: never)."""

    name = "host"

    def __init__(
        self,
        state_dir: Path,
        *,
        sink: HealthSink | None = None,
        refresh_s: float = 1.0,
        report_s: float = 300.0,
    ) -> None:
        self.state_dir = state_dir
        self.sink = sink
        self.refresh_s = max(refresh_s, 1.0)
        self.report_s = report_s
        self.latest: dict[str, Any] = {}
        self.taken_at: float | None = None

    async def __aenter__(self) -> HostMonitor:
        await self._refresh()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def _refresh(self) -> None:
        try:
            self.latest = await asyncio.to_thread(host_snapshot, self.state_dir)
        except (OSError, psutil.Error) as exc:
            log.debug("host snapshot failed: %s", exc)
            return
        self.taken_at = time.time()

    async def run(self) -> None:
        next_report = time.monotonic() + min(self.report_s, 60.0)
        while True:
            await asyncio.sleep(self.refresh_s)
            await self._refresh()
            if self.sink is not None and self.report_s > 0 and time.monotonic() >= next_report:
                next_report = time.monotonic() + self.report_s
                await self.sink(dict(self.latest), self.taken_at or time.time())
