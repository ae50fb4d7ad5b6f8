"""The driver protocol, the driver registry and the async poller that wraps blocking drivers."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from edge_agent.config.sensors import SensorBase
from edge_agent.contract import Kind, reading_data
from edge_agent.errors import SensorError
from edge_agent.health import ComponentHealth, State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One value read from a sensor, with its unit."""

    quantity: str
    value: float
    unit: str


class Driver(Protocol):
    """A blocking sensor driver; the poller runs `read` in a thread."""

    def read(self) -> list[Sample]: ...

    def close(self) -> None: ...


Sink = Callable[[Kind, dict[str, Any], str, float], Awaitable[object]]
"""Where readings go: `sink(kind, data, stream, ts)`; app.py wires it to the outbox."""

DriverFactory = Callable[[Any], Driver]


class Poller:
    """Polls one sensor on its interval: timeout, capped jittered backoff, state for the page."""

    def __init__(
        self, config: SensorBase, driver: Driver, *, sink: Sink, health: ComponentHealth
    ) -> None:
        self.config = config
        self.driver = driver
        self.sink = sink
        self.health = health
        self.name = f"sensor:{config.name}"
        self._failures = 0

    async def __aenter__(self) -> Poller:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.driver.close)
        self.health.set_state(State.STOPPED)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            delay = await self._poll_once()
            self.health.beat(delay + self.config.timeout_s)
            await asyncio.sleep(max(0.0, delay - (time.monotonic() - started)))

    async def _poll_once(self) -> float:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # races with the read finishing, and the TaskGroup then never stops.
            async with asyncio.timeout(self.config.timeout_s):
                samples = await asyncio.to_thread(self.driver.read)
        except TimeoutError:
            return self._failed(f"no answer within {self.config.timeout_s:g} s")
        except SensorError as exc:
            return self._failed(str(exc))
        ts = time.time()
        for sample in samples:
            quality = "ok" if math.isfinite(sample.value) else "bad"
            data = reading_data(
                sensor=self.config.name,
                quantity=sample.quantity,
                value=sample.value if quality == "ok" else None,
                unit=sample.unit,
                quality=quality,
                raw=None if quality == "ok" else sample.value,
            )
            await self.sink(Kind.READING, data, self.config.name, ts)
        self.health.progress("readings", len(samples))
        if self.health.set_state(State.OK):
            log.info("sensor %s: ok", self.config.name)
        self._failures = 0
        return self.config.interval_s

    def _failed(self, reason: str) -> float:
        self._failures += 1
        self.health.count("errors")
        state = State.DEGRADED if self._failures < 3 else State.FAILING
        if self.health.set_state(state, reason, error=reason):
            log.warning("sensor %s: %s (%s)", self.config.name, state.value, reason)
        backoff = min(self.config.backoff_max_s, self.config.interval_s * 2 ** (self._failures - 1))
        return float(backoff * random.uniform(0.8, 1.2))
