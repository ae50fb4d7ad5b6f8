"""The derived stream: hourly means of the committed readings, VN_AQI every hour and every
day, and QCVN 05:2023 limit alerts, all written back to the outbox as events.

`app.py` hands every reading to `offer()` after the outbox committed it, and binds `sink` to
the outbox. Nothing here imports sensors, sync or web.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.config.environment import AqiConfig, LimitsConfig, offset_seconds
from edge_agent.contract import Kind, reading_data, utc_iso
from edge_agent.derive.concentration import AIR_POLLUTANTS, UG_M3, to_ug_m3
from edge_agent.derive.hours import HOUR, RETAIN_HOURS, HourlyMeans, hour_end_of
from edge_agent.derive.limits import PERIOD_HOURS, Limit, resolve, step
from edge_agent.derive.store import DeriveStore
from edge_agent.derive.vn_aqi import (
    GASES,
    NOWCAST_HOURS,
    PARTICLES,
    POLLUTANTS,
    daily_from_hours,
    hourly_aqi,
    mean_if_covered,
)
from edge_agent.errors import EdgeAgentError
from edge_agent.health import ComponentHealth, State, reason

log = logging.getLogger(__name__)

Sink = Callable[[Kind, dict[str, Any], str, float], Awaitable[object]]
Clock = Callable[[], float]
Event = tuple[Kind, dict[str, Any], str, float]
DAY = 86400
ALERT_STREAM = "alert"
CLOSE_TIMEOUT_S = 5.0


class DerivedStreams:
    """The `derive` component: one writer of its hourly means and of its health entry."""

    def __init__(
        self,
        aqi: AqiConfig,
        limits: LimitsConfig,
        *,
        state_dir: Path,
        sink: Sink,
        health: ComponentHealth,
        clock: Clock = time.time,
        tick_s: float = 1.0,
    ) -> None:
        self.name = "derive"
        self.aqi = aqi
        self.limits_config = limits
        self.sink = sink
        self.health = health
        self.clock = clock
        self.tick_s = tick_s
        self.offset = offset_seconds(aqi.utc_offset)
        self.pollutant_of = {getattr(aqi.quantities, p): p for p in POLLUTANTS}
        self.limits: list[Limit] = resolve(limits, self.pollutant_of) if limits.enabled else []
        self.hours = HourlyMeans(min_samples=aqi.min_samples_per_hour)
        self.active: dict[tuple[str, str, str], tuple[float, float]] = {}
        self._aqi_quantities = set(self.pollutant_of) if aqi.enabled else set()
        self._limit_quantities = {limit.quantity for limit in self.limits}
        self._aqi_sensors = set(aqi.sensors) or None
        self._limit_sensors = set(limits.sensors) or None
        self._path = state_dir / "derive.sqlite3"
        self._store: DeriveStore | None = None
        self._closing: asyncio.Future[None] | None = None

    async def __aenter__(self) -> DerivedStreams:
        self._store = await asyncio.to_thread(DeriveStore, self._path)
        saved = await asyncio.to_thread(self._store.load)
        self.hours.restore(
            last_closed=saved.last_closed, closed=saved.hourly, open_sums=saved.open_sums
        )
        self.active = {(s, q, p): (since, v) for s, q, p, since, v in saved.alerts}
        self.health.set_facts(active_alerts=len(self.active))
        self.health.set_state(State.OK)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closing is not None and not self._closing.done():
            # A shutdown in the middle of closing an hour lets it finish (events and marker
            # together), so the restart neither repeats nor loses that hour.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._closing
        store, self._store = self._store, None
        if store is not None:
            try:
                await asyncio.to_thread(store.save_open, self._open_rows())
            finally:
                await asyncio.to_thread(store.close)
        self.health.set_state(State.STOPPED)

    # --- input -----------------------------------------------------------------------------

    def offer(self, kind: Kind | str, data: dict[str, Any], stream: str, ts: float) -> None:
        """Take one committed event; only usable readings of watched quantities are kept.
        Never raises: whatever the reading holds, the producer is not disturbed."""
        try:
            self._offer(kind, data, ts)
        except Exception as exc:  # a malformed reading must not reach the producer
            self.health.count("rejected")
            log.debug("derive: reading not used: %s", exc)

    def _offer(self, kind: Kind | str, data: dict[str, Any], ts: float) -> None:
        if kind != Kind.READING:
            return
        quantity, sensor = data.get("quantity"), data.get("sensor")
        if not isinstance(quantity, str) or not isinstance(sensor, str):
            return
        wanted = (
            quantity in self._aqi_quantities
            and (self._aqi_sensors is None or sensor in self._aqi_sensors)
        ) or (
            quantity in self._limit_quantities
            and (self._limit_sensors is None or sensor in self._limit_sensors)
        )
        if not wanted:
            return
        value = data.get("value")
        number = float(value) if isinstance(value, int | float) else math.nan
        if data.get("quality") == "bad" or isinstance(value, bool) or not math.isfinite(number):
            self.health.count("bad_not_used")
            return
        unit = str(data.get("unit", ""))
        pollutant = self.pollutant_of.get(quantity, quantity)
        if pollutant in AIR_POLLUTANTS:
            converted = to_ug_m3(pollutant, number, unit)
            if converted is None:
                self.health.count("unit_rejected")
                return
            number, unit = converted, UG_M3
        stats = data.get("stats")
        window = stats.get("window_s") if isinstance(stats, dict) else None
        window_s = float(window) if isinstance(window, int | float) else None
        outcome = self.hours.add(sensor, quantity, number, unit, hour_end_of(ts, window_s))
        self.health.count({"ok": "used", "late": "late", "unit": "unit_rejected"}[outcome])

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        last_checkpoint = time.monotonic()
        while True:
            self._closing = asyncio.ensure_future(self._close_due())
            await asyncio.shield(self._closing)
            if time.monotonic() - last_checkpoint >= self.aqi.checkpoint_s:
                await self._checkpoint()
                last_checkpoint = time.monotonic()
            # Closing an hour commits to the outbox and to our file: allow for a slow disk.
            self.health.beat(self.tick_s + 30.0)
            await asyncio.sleep(self.tick_s)

    async def _checkpoint(self) -> None:
        if self._store is not None:
            await asyncio.to_thread(self._store.save_open, self._open_rows())

    def _open_rows(self) -> list[tuple[str, str, int, float, int, str]]:
        return [(s, q, h, v.total, v.count, v.unit) for (s, q, h), v in self.hours.open.items()]

    async def _close_due(self) -> None:
        due = math.floor((self.clock() - self.aqi.grace_s) / HOUR) * HOUR
        last = self.hours.last_closed
        if last is None:
            # First start: nothing before now is ours to report.
            self.hours.last_closed = due
            await self._save(due, [])
            return
        if due - last > RETAIN_HOURS * HOUR:
            log.info(
                "derive: %d hours passed since the last closed hour; reporting the last %d",
                (due - last) // HOUR,
                RETAIN_HOURS,
            )
            self.hours.last_closed = due - RETAIN_HOURS * HOUR
        while (last := self.hours.last_closed) is not None and last < due:
            await self._close(last + HOUR)

    async def _close(self, hour_end: int) -> None:
        means = self.hours.close(hour_end)
        events: list[Event] = []
        if self.aqi.enabled:
            events.append(self._hourly_aqi(hour_end))
        events += self._limit_events(hour_end, ("1h", "8h"))
        if (hour_end + self.offset) % DAY == 0:
            if self.aqi.enabled and self.aqi.daily:
                events.append(self._daily_aqi(hour_end))
            events += self._limit_events(hour_end, ("24h",))
        # Into the outbox first, then the marker: a crash in between repeats this hour's
        # events after the restart rather than losing them.
        for kind, data, stream, ts in events:
            try:
                await self.sink(kind, data, stream, ts)
            except EdgeAgentError as exc:
                self.health.count("emit_failed")
                log.error("derive: %s %s refused by the outbox: %s", kind, stream, exc)
        await self._save(hour_end, self.hours.rows(means, hour_end))
        self.health.progress("hours_closed")
        self.health.set_facts(last_hour=utc_iso(hour_end), active_alerts=len(self.active))

    async def _save(self, hour_end: int, rows: list[tuple[str, str, int, float, str]]) -> None:
        if self._store is None:
            return
        alerts = [(s, q, p, since, v) for (s, q, p), (since, v) in self.active.items()]
        try:
            await asyncio.to_thread(
                self._store.save_close,
                hour_end,
                rows,
                alerts,
                keep_after=hour_end - RETAIN_HOURS * HOUR,
            )
        except EdgeAgentError as exc:
            # The means stay in memory; the next hour's save carries the marker forward.
            if self.health.set_state(
                State.DEGRADED, reason("state_not_saved", str(exc)), error=str(exc)
            ):
                log.warning("derive: %s", exc)
            return
        if self.health.state is not State.OK and self.health.set_state(State.OK):
            log.info("derive: state saved again")

    # --- VN_AQI ----------------------------------------------------------------------------

    def _series(self, pollutant: str, ends: list[int]) -> list[float | None]:
        quantity = getattr(self.aqi.quantities, pollutant)
        return [self.hours.pooled(self._aqi_sensors, quantity, end) for end in ends]

    def _measured(self, pollutant: str) -> bool:
        sensors = self.hours.sensors_of(getattr(self.aqi.quantities, pollutant))
        return any(self._aqi_sensors is None or s in self._aqi_sensors for s in sensors)

    def _hourly_aqi(self, hour_end: int) -> Event:
        ends = [hour_end - i * HOUR for i in range(NOWCAST_HOURS)]
        particles = {p: self._series(p, ends) for p in PARTICLES}
        gases = {p: self._series(p, ends[:1])[0] for p in GASES}
        result = hourly_aqi(pm2_5_hours=particles["pm2_5"], pm10_hours=particles["pm10"], **gases)
        missing: dict[str, list[str]] = {}
        for pollutant in POLLUTANTS:
            series = particles.get(pollutant) or [gases[pollutant]]
            gaps = [utc_iso(end) for end, v in zip(ends, series, strict=False) if v is None]
            if gaps and self._measured(pollutant):
                missing[pollutant] = gaps
        data = self._aqi_data("vn_aqi_hourly", result.aqi, hour_end - HOUR, hour_end)
        data.update(result.fields())
        if missing:
            data["missing_hours"] = missing
        self._note_aqi("last_aqi_hourly", result.aqi)
        return (Kind.READING, data, self.aqi.name, float(hour_end))

    def _daily_aqi(self, day_end: int) -> Event:
        ends = [day_end - i * HOUR for i in range(23, -1, -1)]
        before = [day_end - i * HOUR for i in range(30, 23, -1)]
        day = {p: self._series(p, ends) for p in POLLUTANTS}
        result = daily_from_hours(
            day, o3_before=self._series("o3", before), min_coverage=self.aqi.min_coverage
        )
        data = self._aqi_data("vn_aqi_daily", result.aqi, day_end - DAY, day_end)
        data.update(result.fields())
        data["day"] = self._local_date(day_end).isoformat()
        data["hours"] = {
            p: sum(1 for v in day[p] if v is not None) for p in POLLUTANTS if self._measured(p)
        }
        self._note_aqi("last_aqi_daily", result.aqi)
        return (Kind.READING, data, self.aqi.name, float(day_end))

    def _aqi_data(self, quantity: str, aqi: int | None, start: int, end: int) -> dict[str, Any]:
        data = reading_data(
            sensor=self.aqi.name,
            quantity=quantity,
            value=aqi,
            unit="1",
            quality="ok" if aqi is not None else "bad",
        )
        data["period"] = {"from": utc_iso(start), "to": utc_iso(end)}
        return data

    def _note_aqi(self, fact: str, aqi: int | None) -> None:
        self.health.set_facts(**{fact: aqi})

    def _local_date(self, end: int) -> dt.date:
        """The local date a period ending at `end` belongs to (24:00 is the day's last hour)."""
        return dt.datetime.fromtimestamp(end - 1 + self.offset, tz=dt.UTC).date()

    # --- limits ----------------------------------------------------------------------------

    def _limit_events(self, hour_end: int, periods: tuple[str, ...]) -> list[Event]:
        events: list[Event] = []
        for limit in self.limits:
            if limit.period not in periods:
                continue
            n = PERIOD_HOURS[limit.period]
            ends = [hour_end - i * HOUR for i in range(n - 1, -1, -1)]
            for sensor in self.hours.sensors_of(limit.quantity):
                if self._limit_sensors is not None and sensor not in self._limit_sensors:
                    continue
                if self.hours.units.get((sensor, limit.quantity)) != limit.unit:
                    self.health.count("limit_unit_mismatch")
                    continue
                hours = [self.hours.mean(sensor, limit.quantity, end) for end in ends]
                value = mean_if_covered(hours, min_coverage=self.aqi.min_coverage)
                if value is None:
                    continue  # a missing period changes nothing: no alert, no all-clear
                event = self._step(limit, sensor, value, ends[0] - HOUR, hour_end)
                if event is not None:
                    events.append(event)
        return events

    def _step(self, limit: Limit, sensor: str, value: float, start: int, end: int) -> Event | None:
        key = (sensor, limit.quantity, limit.period)
        was = key in self.active
        threshold = limit.value_on(self._local_date(end))
        hysteresis = self.limits_config.hysteresis
        if step(was, value, threshold, hysteresis) == was:
            return None
        data: dict[str, Any] = {
            "alert": "limit_exceeded",
            "severity": "info" if was else "warning",
            "state": "cleared" if was else "active",
            "sensor": sensor,
            "quantity": limit.quantity,
            "period": limit.period,
            "value": round(value, 3),
            "limit": threshold,
            "clear_at": round(threshold * (1.0 - hysteresis), 3),
            "unit": limit.unit,
            "standard": limit.standard,
            "from": utc_iso(start),
            "to": utc_iso(end),
        }
        if was:
            since, _ = self.active.pop(key)
            data["since"] = utc_iso(since)
            log.info("limit %s %s %s returned: %.1f", sensor, limit.quantity, limit.period, value)
        else:
            self.active[key] = (float(end), value)
            log.info(
                "limit %s %s %s exceeded: %.1f > %g",
                sensor,
                limit.quantity,
                limit.period,
                value,
                threshold,
            )
        return (Kind.ALERT, data, ALERT_STREAM, float(end))
