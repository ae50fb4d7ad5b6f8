"""Component states and the host snapshot.

A leaf module like `config` and `contract`: components report their state through a
`ComponentHealth` handed to them by `app.py`; the status page, metrics and the watchdog
read the `HealthRegistry`. Readers never write.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil


class State(enum.StrEnum):
    STARTING = "starting"
    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"
    STOPPED = "stopped"


@dataclass
class ComponentHealth:
    """The live state of one component. Thread-safe: capture threads write here too."""

    name: str
    kind: str = "component"
    state: State = State.STARTING
    since: float = field(default_factory=time.time)
    detail: str = ""
    last_error: str = ""
    last_progress: float | None = None
    last_beat: float | None = None
    beat_period_s: float | None = None
    counters: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_state(self, state: State, detail: str = "", *, error: str | None = None) -> bool:
        """Set the state; returns True when it changed (so callers log transitions once)."""
        with self._lock:
            changed = state is not self.state
            if changed:
                self.state = state
                self.since = time.time()
            self.detail = detail
            if error is not None:
                self.last_error = error
            return changed

    def progress(self, counter: str | None = None, amount: float = 1) -> None:
        """Record that data flowed: health means data flows, not that the task is alive."""
        with self._lock:
            self.last_progress = time.monotonic()
            if counter is not None:
                self.counters[counter] = self.counters.get(counter, 0) + amount

    def beat(self, period_s: float) -> None:
        """Record that the component's loop turned; it promises to turn again within `period_s`.

        The watchdog is fed only while every beating component keeps that promise, so a
        wedged loop (a hung thread, a blocked event loop) gets the agent restarted while a
        sensor that is merely unplugged does not.
        """
        with self._lock:
            self.last_beat = time.monotonic()
            self.beat_period_s = period_s

    def overdue(self, now: float, grace_s: float) -> bool:
        with self._lock:
            if self.beat_period_s is None or self.last_beat is None:
                return False
            return now - self.last_beat > 3 * self.beat_period_s + grace_s

    def count(self, counter: str, amount: float = 1) -> None:
        with self._lock:
            self.counters[counter] = self.counters.get(counter, 0) + amount

    def set_facts(self, **facts: Any) -> None:
        with self._lock:
            self.facts.update(facts)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            age = None if self.last_progress is None else time.monotonic() - self.last_progress
            return {
                "name": self.name,
                "kind": self.kind,
                "state": self.state.value,
                "since": self.since,
                "detail": self.detail,
                "last_error": self.last_error,
                "progress_age_s": age,
                "counters": dict(self.counters),
                "facts": dict(self.facts),
            }


class HealthRegistry:
    """All component states of one agent, in registration order."""

    def __init__(self) -> None:
        self._components: dict[str, ComponentHealth] = {}
        self.started_at = time.time()

    def register(self, name: str, *, kind: str = "component") -> ComponentHealth:
        if name in self._components:
            raise ValueError(f"component {name!r} registered twice")
        health = ComponentHealth(name=name, kind=kind)
        self._components[name] = health
        return health

    def __iter__(self) -> Iterator[ComponentHealth]:
        return iter(list(self._components.values()))

    def get(self, name: str) -> ComponentHealth | None:
        return self._components.get(name)

    def overall(self) -> State:
        states = {c.state for c in self}
        if State.FAILING in states:
            return State.FAILING
        if State.DEGRADED in states or State.STARTING in states:
            return State.DEGRADED
        return State.OK

    def progressing(self, *, grace_s: float = 10.0) -> bool:
        """True while no component's loop is overdue; the systemd watchdog is fed only then."""
        now = time.monotonic()
        return not any(c.overdue(now, grace_s) for c in self if c.state is not State.STOPPED)

    def snapshot(self) -> list[dict[str, Any]]:
        return [c.snapshot() for c in self]


def host_snapshot(state_dir: Path) -> dict[str, Any]:
    """CPU, memory, disk of the state dir, load, temperature and uptime of this host."""
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
    return facts


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
