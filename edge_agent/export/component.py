"""The `station_export` component: 5-minute means of the station parameters, written as the
files of Circular 10/2021/TT-BTNMT to the node's disk, and uploaded from there to the
department's FTP server, oldest first, retrying until every file is there.

`app.py` hands every committed reading to `offer()`. Nothing here imports sensors, sync or web.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from edge_agent.backoff import Backoff
from edge_agent.config.environment import StationExportConfig, offset_seconds
from edge_agent.contract import Kind, utc_iso
from edge_agent.errors import EdgeAgentError
from edge_agent.export.ftp import FtpUploader, UploadError
from edge_agent.export.spool import Spool, Spooled
from edge_agent.export.station_file import Samples, file_name, lines, render, station_dir
from edge_agent.health import ComponentHealth, State, reason

log = logging.getLogger(__name__)

T = TypeVar("T")
Sink = Callable[[Kind, dict[str, Any], str, float], Awaitable[object]]
Clock = Callable[[], float]
UploaderFactory = Callable[[StationExportConfig], FtpUploader]
DAY = 86400.0


async def in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run blocking network work on a daemon thread: a server that stops answering can
    hold that thread until its socket times out, but never the event loop or the exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="station-upload", daemon=True).start()
    return await future


class StationExport:
    def __init__(
        self,
        config: StationExportConfig,
        *,
        state_dir: Path,
        sink: Sink,
        health: ComponentHealth,
        clock: Clock = time.time,
        uploader: UploaderFactory = FtpUploader,
        tick_s: float = 1.0,
        retry_base_s: float = 5.0,
    ) -> None:
        assert config.province and config.facility
        self.name = "station_export"
        self.config = config
        self.province, self.facility = config.province, config.facility
        self.sink = sink
        self.health = health
        self.clock = clock
        self.uploader = uploader
        self.tick_s = tick_s
        self.offset = offset_seconds(config.utc_offset)
        self.interval = float(config.interval_s)
        self.spool = Spool(state_dir / "station_export")
        # (station index, parameter index) -> period end -> samples
        self._samples: dict[int, dict[tuple[int, int], Samples]] = {}
        self._next_end: float | None = None
        self._wake = asyncio.Event()
        self._stopping = threading.Event()
        self._retry = Backoff(min(retry_base_s, config.retry_max_s), config.retry_max_s)
        self._failures = 0
        self._by_quantity: dict[str, list[tuple[int, int]]] = {}
        for s, station in enumerate(config.stations):
            for p, parameter in enumerate(station.parameters):
                self._by_quantity.setdefault(parameter.quantity, []).append((s, p))

    async def __aenter__(self) -> StationExport:
        await asyncio.to_thread(self.spool.open)
        pending = await asyncio.to_thread(self.spool.pending)
        self.health.set_facts(pending_files=len(pending))
        self.health.set_state(State.OK)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The open period is not written: its file would be short of the minutes to come,
        # and the next start begins a fresh period. The written files wait on disk; an
        # upload under way finishes its file (or is cut off, and sent again next time).
        self._stopping.set()
        self.health.set_state(State.STOPPED)

    # --- input -----------------------------------------------------------------------------

    def offer(self, kind: Kind | str, data: dict[str, Any], stream: str, ts: float) -> None:
        """Take one committed event; never raises into the producer."""
        try:
            self._offer(kind, data, ts)
        except Exception as exc:  # a malformed reading must not reach the producer
            self.health.count("rejected")
            log.debug("station export: reading not used: %s", exc)

    def _offer(self, kind: Kind | str, data: dict[str, Any], ts: float) -> None:
        if kind != Kind.READING:
            return
        targets = self._by_quantity.get(str(data.get("quantity")))
        if not targets:
            return
        sensor = data.get("sensor")
        stats = data.get("stats")
        window = stats.get("window_s") if isinstance(stats, dict) else None
        middle = ts - (float(window) if isinstance(window, int | float) else 0.0) / 2
        end = (math.floor(middle / self.interval) + 1) * self.interval
        if self._next_end is not None and end < self._next_end:
            self.health.count("late")
            return
        status = str(data.get("status", "normal"))
        value = data.get("value")
        number: float | None = float(value) if isinstance(value, int | float) else None
        if status != "normal":
            number = _raw_number(data.get("raw"))
        elif data.get("quality") == "bad":
            number = None
        for s, p in targets:
            wanted = self.config.stations[s].parameters[p].sensor
            if wanted is not None and wanted != sensor:
                continue
            period = self._samples.setdefault(int(end), {})
            period.setdefault((s, p), Samples()).add(status, number)

    # --- the loops -------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._write_loop(), name="station-files")
            tg.create_task(self._upload_loop(), name="station-upload")

    async def _write_loop(self) -> None:
        last_prune = -math.inf
        while True:
            now = self.clock()
            if self._next_end is None:
                # The first period is the one running now: it is written with what comes.
                self._next_end = (math.floor(now / self.interval) + 1) * self.interval
            while self._next_end + self.config.grace_s <= now:
                await self._write_period(self._next_end)
                self._next_end += self.interval
            if time.monotonic() - last_prune >= 3600:
                last_prune = time.monotonic()
                await asyncio.to_thread(self.spool.prune_sent, self.config.keep_sent_days * DAY)
            self.health.beat(self.tick_s + 30.0)
            await asyncio.sleep(self.tick_s)

    async def _write_period(self, end: float) -> None:
        period = self._samples.pop(int(end), {})
        written = []
        for s, station in enumerate(self.config.stations):
            text = lines(
                station.parameters,
                [period.get((s, p)) for p in range(len(station.parameters))],
                end,
                self.offset,
            )
            name = file_name(self.province, self.facility, station.code, end, self.offset)
            rel_dir = station_dir(station.code, end, self.offset)
            if await asyncio.to_thread(self.spool.write, rel_dir, name, render(text)):
                written.append(name)
            else:
                self.health.count("files_existing")
        dropped = await asyncio.to_thread(self.spool.drop_oldest, self.config.max_pending_files)
        if dropped:
            await self._report_dropped(dropped, end)
        self.health.count("files_written", len(written))
        self.health.set_facts(last_file=written[-1] if written else None)
        self._wake.set()

    async def _report_dropped(self, dropped: list[Spooled], ts: float) -> None:
        self.health.count("files_dropped", len(dropped))
        log.error(
            "station export: %d files dropped unsent (more than %d waiting): %s .. %s",
            len(dropped),
            self.config.max_pending_files,
            dropped[0].name,
            dropped[-1].name,
        )
        data = {
            "alert": "station_files_dropped",
            "severity": "error",
            "count": len(dropped),
            "first": dropped[0].name,
            "last": dropped[-1].name,
        }
        try:
            await self.sink(Kind.ALERT, data, "alert", ts)
        except EdgeAgentError as exc:
            log.error("station export: the drop alert was refused: %s", exc)

    async def _upload_loop(self) -> None:
        while True:
            pending = await asyncio.to_thread(self.spool.pending)
            self.health.set_facts(pending_files=len(pending))
            if not pending:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._wake.wait()
                continue
            try:
                await in_daemon_thread(functools.partial(self._upload, pending))
            except UploadError as exc:
                self._failures += 1
                delay = self._retry.next()
                state = State.FAILING if self._failures >= 3 else State.DEGRADED
                why = reason(
                    "ftp_unreachable",
                    f"station files not uploaded: {exc}",
                    server=f"{self.config.host}:{self.config.port}",
                    since=utc_iso(self.clock()),
                )
                if self.health.set_state(state, why, error=str(exc)):
                    log.warning("station export: %s; retrying (%s)", exc, state.value)
                await asyncio.sleep(delay)
                continue
            self._failures = 0
            self._retry.reset()
            if self.health.set_state(State.OK):
                log.info("station export: uploads flow again")

    def _upload(self, pending: list[Spooled]) -> None:
        """Blocking: one FTP session for the whole backlog, oldest first."""
        with self.uploader(self.config) as session:
            for item in pending:
                if self._stopping.is_set():
                    return
                try:
                    content = self.spool.read(item)
                except FileNotFoundError:
                    continue  # dropped meanwhile
                session.upload(item.rel_dir, item.name, content)
                self.spool.mark_sent(item)
                self.health.count("files_uploaded")
                self.health.progress()
                self.health.set_facts(last_upload=item.name)


def _raw_number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
