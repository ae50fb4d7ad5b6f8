"""Derive test helpers: an injected clock, a recording sink, a running component."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config.environment import AqiConfig, LimitsConfig
from edge_agent.contract import Kind, reading_data
from edge_agent.derive.component import DerivedStreams
from edge_agent.health import ComponentHealth

# 2026-11-27 00:00 in Vietnam (UTC+7): the start of a local day.
DAY_START = dt.datetime(2026, 11, 26, 17, 0, tzinfo=dt.UTC).timestamp()
HOUR = 3600.0


@dataclass
class Clock:
    """Wall-clock time the test moves by hand. It starts just past the grace of the hour
    ending at DAY_START, so a fresh component takes that hour as already closed."""

    now: float = DAY_START + 61.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Events:
    """A sink that keeps every event and lets a test wait on them."""

    items: list[tuple[Kind, dict[str, Any], str, float]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, kind: Kind, data: dict[str, Any], stream: str, ts: float) -> None:
        self.items.append((kind, data, stream, ts))
        self._changed.set()

    def readings(self, quantity: str) -> list[dict[str, Any]]:
        return [d for k, d, _, _ in self.items if k is Kind.READING and d["quantity"] == quantity]

    def alerts(self) -> list[dict[str, Any]]:
        return [d for k, d, _, _ in self.items if k is Kind.ALERT]

    async def wait_for(self, check: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not check():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()


@contextlib.asynccontextmanager
async def running_derive(
    state_dir: Path,
    clock: Clock,
    events: Events,
    *,
    aqi: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> AsyncIterator[DerivedStreams]:
    component = DerivedStreams(
        AqiConfig(**({"enabled": True, "grace_s": 60} | (aqi or {}))),
        LimitsConfig(**(limits or {})),
        state_dir=state_dir,
        sink=events,
        health=ComponentHealth("derive"),
        clock=clock,
        tick_s=0.01,
    )
    async with component:
        task = asyncio.create_task(component.run())
        try:
            # Its first turn takes the clock as it stands: wait for it before moving time.
            async with asyncio.timeout(10):
                while True:  # the health entry has no event to wait on; poll it
                    if component.health.last_beat is not None:
                        break
                    await asyncio.sleep(0.005)
            yield component
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def reading(
    quantity: str, value: float | None, *, sensor: str = "aq-1", unit: str = "ug/m3", **extra: Any
) -> dict[str, Any]:
    quality = "ok" if value is not None else "bad"
    return (
        reading_data(sensor=sensor, quantity=quantity, value=value, unit=unit, quality=quality)
        | extra
    )


async def feed_hour(
    component: DerivedStreams,
    clock: Clock,
    events: Events,
    hour_start: float,
    values: dict[str, float | None],
    *,
    sensor: str = "aq-1",
    expect: str = "vn_aqi_hourly",
) -> None:
    """Offer one reading per quantity in the hour starting at `hour_start` (a value of None
    offers nothing: a missing hour), then move the clock past the hour's grace and wait
    for its `expect` reading."""
    for quantity, value in values.items():
        if value is not None:
            component.offer(
                Kind.READING, reading(quantity, value, sensor=sensor), sensor, hour_start + 600
            )
    before = len(events.readings(expect)) if expect else 0
    clock.now = hour_start + HOUR + 61
    if expect:
        await events.wait_for(lambda: len(events.readings(expect)) > before)
