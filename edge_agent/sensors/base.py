"""The driver protocol and the async poller that wraps blocking drivers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

from edge_agent.backoff import Backoff
from edge_agent.config.sensors import SensorBase
from edge_agent.contract import Kind, reading_data, utc_iso
from edge_agent.errors import SensorError
from edge_agent.health import ComponentHealth, State, reason
from edge_agent.sensors.quality import Aggregator, Checked, Validator

log = logging.getLogger(__name__)

# ok/degraded changes reach the IOC at most this often (entering or leaving failing: at once).
STATE_EVENT_MIN_S = 60.0

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One value read from a sensor, with its unit, and the instrument's status when the
    device reports one ("calibrating" and "fault" values are never sent as measurements);
    `raw` keeps what the device said when it was not a number (the value is then NaN and the
    reading goes out as 'bad')."""

    quantity: str
    value: float
    unit: str
    status: str = "normal"
    raw: str | None = None


class Driver(Protocol):
    """A blocking sensor driver; the poller runs `read` in the sensor's own thread.

    `read` raises `SensorError` for a failed read (anything else is caught too, as a driver
    bug). A driver may also offer `facts() -> dict` (e.g. frames rejected) for the status page.
    """

    def read(self) -> list[Sample]: ...

    def close(self) -> None: ...


Sink = Callable[[Kind, dict[str, Any], str, float], Awaitable[object]]
"""Where readings go: `sink(kind, data, stream, ts)`; app.py wires it to the outbox."""

Clock = Callable[[], float]
"""Wall-clock time for reading timestamps (`time.time`; tests inject their own)."""


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the poller gave up waiting (timeout or shutdown)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ReadThread:
    """One daemon thread per sensor, so a hung driver holds only its own thread.

    Not the loop's default executor: it is small and shared, and its threads are joined at
    interpreter exit, so one wedged serial read would stall shutdown.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._busy_since: float | None = None
        self._thread.start()

    @property
    def busy_for(self) -> float | None:
        """Seconds the current job has been running, or None when idle."""
        since = self._busy_since
        return None if since is None else time.monotonic() - since

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._busy_since = time.monotonic()
        self._jobs.put((fn, future, loop))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future, loop = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting task, which decides
                error = exc
            finally:
                self._busy_since = None
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, future, result, error)


class Poller:
    """Polls one sensor on its interval: timeout, capped jittered backoff, state for the page."""

    def __init__(
        self,
        config: SensorBase,
        driver: Driver,
        *,
        sink: Sink,
        health: ComponentHealth,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.driver = driver
        self.sink = sink
        self.health = health
        self.clock = clock
        self.name = f"sensor:{config.name}"
        self.validator = Validator(config.ranges, stuck_after_s=config.stuck_after_s)
        self.aggregator = Aggregator(config.aggregate_s) if config.aggregate_s else None
        self._failures = 0
        self._first_failure = 0.0
        # What the IOC was last told (`sensor` events), and what it still has to be told.
        self._failing_since: float | None = None
        self._pending_gap: tuple[float, float] | None = None
        self._told: State | None = None
        self._told_at = 0.0
        self._retry = Backoff(
            config.interval_s, max(config.backoff_max_s, config.interval_s), jitter=0.4
        )
        self._thread: ReadThread | None = None

    async def __aenter__(self) -> Poller:
        self._thread = ReadThread(f"read-{self.config.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.aggregator is not None:
            await self._emit_aggregates(self.clock(), force=True)
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        # Close in a thread of its own: the read thread may be the one that is hung.
        closer = ReadThread(f"close-{self.config.name}")
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await closer.submit(self.driver.close)
        except TimeoutError:
            log.warning("sensor %s: close did not finish; leaving it", self.config.name)
        except Exception as exc:
            log.warning("sensor %s: close failed: %s", self.config.name, exc)
        finally:
            closer.stop()
        self.health.set_state(State.STOPPED)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            delay = await self._poll_once()
            await self._report_state()
            if self.aggregator is not None:
                await self._emit_aggregates(self.clock())
            self.health.beat(delay + self.config.timeout_s)
            await asyncio.sleep(max(0.0, delay - (time.monotonic() - started)))

    async def _read(self) -> list[Sample]:
        if self._thread is None:
            raise SensorError(f"sensor {self.config.name}: poller not started")
        hung = self._thread.busy_for
        if hung is not None:
            # Never queue a read behind a hung one: it would only hang too.
            self.health.count("skipped")
            raise SensorError(
                f"no answer within {self.config.timeout_s:g} s; read still hung after"
                f" {hung:.1f} s, not starting another"
            )
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # races with the read finishing, and the TaskGroup then never stops.
        async with asyncio.timeout(self.config.timeout_s):
            return await self._thread.submit(self.driver.read)

    async def _poll_once(self) -> float:
        try:
            samples = await self._read()
        except TimeoutError:
            self.health.count("timeouts")
            return self._failed(f"no answer within {self.config.timeout_s:g} s", "no_answer")
        except SensorError as exc:
            return self._failed(str(exc))
        except Exception as exc:
            log.debug("sensor %s: driver raised", self.config.name, exc_info=exc)
            return self._failed(f"driver error: {type(exc).__name__}: {exc}", "driver_error")
        finally:
            self._driver_facts()
        ts = self.clock()
        now = time.monotonic()
        checked = [
            self.validator.check(s.quantity, s.value, s.unit, now=now, status=s.status, raw=s.raw)
            for s in samples
        ]
        # Concurrent puts share one outbox group commit: one fsync per read, not per quantity.
        await asyncio.gather(*(self._emit(item, ts) for item in checked))
        usable = [c for c in checked if c.quality != "bad"]
        problems = [c.reason for c in checked if c.quality != "ok"]
        for quality in ("bad", "suspect"):
            n = sum(1 for c in checked if c.quality == quality)
            if n:
                self.health.count(quality, n)
        if checked and all(c.status == "calibrating" for c in checked):
            # Calibration is the instrument's routine, not a failed read.
            self._failures = 0
            self._retry.reset()
            routine = reason("instrument_calibrating", "the instrument reports calibration")
            if self.health.set_state(State.DEGRADED, routine):
                log.info("sensor %s: calibrating", self.config.name)
            return self.config.interval_s
        if not usable:
            return self._failed(
                "; ".join(problems) or "no values in the answer", "no_usable_values"
            )
        self.health.progress("readings", len(usable))
        self.health.set_facts(last_read=ts)
        if self._failing_since is not None:
            self._pending_gap = (self._failing_since, ts)
        self._failing_since = None
        self._failures = 0
        self._retry.reset()
        state = State.DEGRADED if problems else State.OK
        why = (
            reason("values_rejected", "; ".join(problems), count=len(problems))
            if problems
            else None
        )
        if self.health.set_state(state, why):
            log.info("sensor %s: %s", self.config.name, state.value)
        return self.config.interval_s

    async def _emit(self, item: Checked, ts: float) -> None:
        if self.aggregator is not None:
            self.aggregator.add(item, ts)
            return
        data = reading_data(
            sensor=self.config.name,
            quantity=item.quantity,
            value=item.value,
            unit=item.unit,
            quality=item.quality,
            raw=item.raw,
        )
        if item.status != "normal":
            data["status"] = item.status
        await self.sink(Kind.READING, data, self.config.name, ts)

    async def _emit_aggregates(self, now: float, *, force: bool = False) -> None:
        assert self.aggregator is not None
        await asyncio.gather(
            *(
                self.sink(Kind.READING, self._aggregate_data(summary), self.config.name, ts)
                for ts, summary in self.aggregator.take_due(now, force=force)
            )
        )

    async def _report_state(self) -> None:
        """Tell the IOC of state changes as `sensor` events, so a missing reading from a dead
        device is told apart from a quiet one. Entering or leaving `failing` goes out at once;
        ok/degraded flapping (a value now and then out of range) at most once a minute, the
        latest state winning."""
        state, why = self.health.state, self.health.reason
        now = time.time()
        if state is not self._told and state in (State.OK, State.DEGRADED, State.FAILING):
            urgent = self._told in (None, State.FAILING) or state is State.FAILING
            if urgent or now - self._told_at >= STATE_EVENT_MIN_S:
                data: dict[str, Any] = {
                    "sensor": self.config.name,
                    "event": "state",
                    "state": state.value,
                    "code": None if why is None else why.code,
                    "detail": "" if why is None else why.text,
                }
                await self.sink(Kind.SENSOR, data, self.config.name, now)
                self._told, self._told_at = state, now
        gap, self._pending_gap = self._pending_gap, None
        if gap is not None:
            start, end = gap
            data = {
                "sensor": self.config.name,
                "event": "coverage_gap",
                "from": utc_iso(start),
                "to": utc_iso(end),
                "duration_s": round(end - start, 3),
            }
            await self.sink(Kind.SENSOR, data, self.config.name, end)

    def _aggregate_data(self, summary: dict[str, Any]) -> dict[str, Any]:
        status = summary.pop("status", None)
        data = reading_data(sensor=self.config.name, **summary)
        if status is not None:
            data["status"] = status
        return data

    def _driver_facts(self) -> None:
        facts = getattr(self.driver, "facts", None)
        if callable(facts):
            self.health.set_facts(**facts())

    def _failed(self, why: str, code: str = "read_failed") -> float:
        if self._failures == 0:
            self._first_failure = time.time()
        self._failures += 1
        self.health.count("errors")
        self.health.set_facts(consecutive_failures=self._failures)
        failing = self._failures >= self.config.failing_after
        state = State.FAILING if failing else State.DEGRADED
        what = reason(code, why, failures=self._failures)
        if failing and self._failing_since is None:
            # Readings stopped at the first failure of the run that made it failing.
            self._failing_since = self._first_failure
        if self.health.set_state(state, what, error=why):
            log.warning("sensor %s: %s (%s)", self.config.name, state.value, why)
        else:
            log.debug("sensor %s: read failed (%s)", self.config.name, why)
        return self._retry.next()
