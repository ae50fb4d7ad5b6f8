"""The outbox component: the async face of the store and its writer thread."""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.config.outbox import OutboxConfig
from edge_agent.contract import PRIORITY_OF_KIND, ContractError, Kind, Priority
from edge_agent.errors import StorageError
from edge_agent.health import ComponentHealth, State, reason
from edge_agent.outbox.encode import TailEncoder
from edge_agent.outbox.ledger import current_boot
from edge_agent.outbox.rows import NewEvent, OutboxRow
from edge_agent.outbox.schema import file_bytes
from edge_agent.outbox.store import Store
from edge_agent.outbox.wear import WearMeter
from edge_agent.outbox.writer import AckJob, PutJob, Writer

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
# Room for the envelope around a tail: the prefix (node, epoch) and 20 digits of seq.
ENVELOPE_HEAD_BYTES = 160

EventSpec = tuple[Kind | str, dict[str, Any], str, float | None, Priority | None]

_PRIORITY: dict[str, int] = {str(k): int(p) for k, p in PRIORITY_OF_KIND.items()}


class Outbox:
    """The durable queue between producers and the publisher.

    Write first: `put()` returns once the event is committed. The publisher drains with
    `claim()` / `ack()`; claimed events are not handed out again until `release()` (or a
    restart), so delivery is at-least-once with `(node, epoch, seq)` as the dedupe key.
    """

    name = "outbox"

    def __init__(
        self,
        path: Path,
        *,
        node: str,
        config: OutboxConfig,
        health: ComponentHealth,
        clock: Callable[[], float] = time.time,
        boot: Callable[[], str] = current_boot,
    ) -> None:
        self.path = path
        self.node = node
        self.config = config
        self.health = health
        self.store = Store(path, node=node, config=config, clock=clock, boot=boot)
        self._writer: Writer | None = None
        self._tails = TailEncoder()  # used on the event loop only
        # Claims run here, on the store's read connection: never queued behind commits.
        self._claimer: ThreadPoolExecutor | None = None
        self._new_rows = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_queued_puts)
        self._queued = 0
        self._windows = [config.window_of(p) for p in sorted(int(p) for p in Priority)]
        # Per stream: the time of its last read, when it came, and the interval before it.
        self._paces: dict[str, tuple[float, float, float]] = {}
        self._rates: tuple[float, float, float] | None = None
        self._rate_facts: dict[str, float] = {"write_rate_per_s": 0.0, "ack_rate_per_s": 0.0}
        self._wear = WearMeter()

    @property
    def epoch(self) -> str:
        return self.store.epoch

    async def __aenter__(self) -> Outbox:
        writer = Writer(
            self.store,
            loop=asyncio.get_running_loop(),
            on_commit=self._new_rows.set,
            on_state=self._writer_state,
        )
        writer.start()
        self._writer = writer
        self._claimer = ThreadPoolExecutor(1, thread_name_prefix="outbox-claim")
        try:
            result = await writer.call(self.store.open)
            if isinstance(result, BaseException):
                raise result
            await writer.call(writer.watch_space)
        except BaseException:
            await self._stop()
            raise
        self._opened_state()
        # The writer promises to turn (it heartbeats every second even when idle).
        self.health.expect_progress(self.config.writer_stall_s)
        self._wear.sample(writer.native_id, self.store.totals.committed()["written"])
        self.health.set_facts(**self.stats())
        if self.store.totals.committed()["pending_rows"]:
            self._new_rows.set()
        return self

    def _opened_state(self) -> None:
        quarantined, loss = self.store.quarantined, self.store.loss
        if quarantined is not None:
            self.health.count("quarantined")
            self.health.set_state(
                State.OK,
                reason(
                    "quarantined",
                    f"epoch {self.epoch}; corrupt file moved to {quarantined.moved_to.name}",
                    file=quarantined.moved_to.name,
                ),
                error=f"corrupt database quarantined: {quarantined.reason}",
            )
        elif loss is not None:
            self.health.count("epoch_changes")
            self.health.set_state(
                State.OK,
                reason(
                    "new_epoch",
                    f"new epoch {self.epoch}: {loss.detail}",
                    cause=loss.cause,
                    previous_epoch=loss.previous_epoch,
                ),
                error=f"new epoch: {loss.detail}",
            )
        else:
            self.health.set_state(State.OK)
        self._writer_state()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()
        self.health.set_facts(**self.stats())
        self.health.set_state(State.STOPPED)

    async def _stop(self) -> None:
        writer, self._writer = self._writer, None
        claimer, self._claimer = self._claimer, None
        if writer is None:
            return
        done = asyncio.get_running_loop().create_future()

        def stop() -> None:
            if claimer is not None:
                # No claim may still read when the writer thread closes the connections; a
                # queued one runs first (cancelling it would cancel its caller's task).
                claimer.shutdown(wait=True)
            writer.stop(STOP_TIMEOUT_S)
            done.get_loop().call_soon_threadsafe(
                lambda: None if done.done() else done.set_result(None)
            )

        # Joining on a thread of its own keeps the loop free while the queue is flushed.
        threading.Thread(target=stop, name="outbox-stop", daemon=True).start()
        await asyncio.shield(done)

    def _writer_state(self) -> None:
        """The writer's condition as this component's state (called on the loop)."""
        writer = self._writer
        if writer is None:
            return
        errors = writer.write_errors - int(self.health.counters.get("write_errors", 0))
        if errors > 0:
            self.health.count("write_errors", errors)
        degraded = writer.degraded
        if writer.fatal is not None:
            self.health.set_state(
                State.FAILING,
                reason("database_corrupt", "database corrupt"),
                error=writer.last_error,
            )
        elif not writer.alive or time.monotonic() - writer.heartbeat > self.config.writer_stall_s:
            self.health.set_state(
                State.FAILING,
                reason(
                    "writer_stalled", "writer thread stalled", seconds=self.config.writer_stall_s
                ),
            )
        elif degraded is not None:
            self.health.set_state(State.DEGRADED, degraded, error=writer.last_error)
        elif self.health.state is not State.OK:
            self.health.set_state(State.OK)

    async def run(self) -> None:
        period = min(self.config.stats_interval_s, self.config.writer_stall_s / 4)
        while True:
            writer = self._require()
            if writer.fatal is not None:
                self._writer_state()
                raise StorageError(
                    f"outbox {self.path} is corrupt ({writer.fatal}); restarting to quarantine it"
                )
            self._update_rates()
            self._wear.sample(writer.native_id, self.store.totals.committed()["written"])
            self.health.set_facts(**self.stats())
            if writer.alive and time.monotonic() - writer.heartbeat < self.config.writer_stall_s:
                self.health.progress()
            # A stall clears by itself once the writer turns again.
            self._writer_state()
            self.health.beat(period)
            await asyncio.sleep(period)

    def _require(self) -> Writer:
        if self._writer is None:
            raise StorageError("outbox is closed")
        return self._writer

    async def put(
        self,
        kind: Kind | str,
        data: dict[str, Any],
        *,
        stream: str,
        ts: float | None = None,
        priority: Priority | None = None,
    ) -> int:
        """Commit one event; returns its seq once it is durable (after its class's commit
        window at most).

        Raises StorageError for an event the outbox refuses (NaN, not JSON, too large).
        """
        event = self._event(kind, data, stream, time.time() if ts is None else ts, priority)
        (seq,) = await self._submit([event])
        self.health.progress("written")
        return seq

    async def put_many(self, events: Iterable[EventSpec]) -> list[int]:
        """Commit several `(kind, data, stream, ts, priority)` events; returns their seqs.

        The readings of one read (same stream and time) are stored as one row. All or
        nothing for bad input: one refused event raises StorageError before any is queued.
        """
        now = time.time()
        batch = [
            self._event(kind, data, stream, now if ts is None else ts, priority)
            for kind, data, stream, ts, priority in events
        ]
        if not batch:
            return []
        seqs = await self._submit(batch)
        self.health.progress("written", len(seqs))
        return seqs

    def _event(
        self,
        kind: Kind | str,
        data: dict[str, Any],
        stream: str,
        ts: float,
        priority: Priority | None,
    ) -> NewEvent:
        """The one encoding step: the envelope's tail, refused here if the contract or the
        size cap says no."""
        name = str(kind)
        try:
            tail = self._tails.encode(ts, name, data)
        except (ContractError, TypeError) as exc:
            self.health.count("refused")
            raise StorageError(f"{name} event on stream {stream} not stored: {exc}") from exc
        if len(tail) + ENVELOPE_HEAD_BYTES > self.store.max_event_bytes:
            self.health.count("refused")
            raise StorageError(
                f"{name} event on stream {stream} of {len(tail)} bytes exceeds the largest"
                f" allowed ({self.store.max_event_bytes}, a quarter of outbox.max_bytes)"
            )
        level = _PRIORITY.get(name, Priority.EVENT) if priority is None else int(priority)
        return NewEvent(name, stream, ts, level, tail)

    def _window(self, batch: list[NewEvent]) -> float:
        """How long this batch may wait for company: its classes' window, but never more
        than a quarter of the interval at which its stream's reads come, so that a producer
        awaiting its commit (a poller) is never slowed by the window."""
        window = min(self._windows[min(e.priority, 3)] for e in batch)
        if window <= 0:
            return 0.0
        first = batch[0]
        pace = self._paces.get(first.stream)
        if pace is None or pace[0] != first.ts:  # a new read, not more of the same one
            now = time.monotonic()
            if len(self._paces) > 4096:
                self._paces.clear()
            pace = (first.ts, now, math.inf if pace is None else now - pace[1])
            self._paces[first.stream] = pace
        return min(window, pace[2] / 4)

    async def _submit(self, batch: list[NewEvent]) -> list[int]:
        writer = self._require()
        window = self._window(batch)
        async with self._slots:
            future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
            writer.submit(PutJob(batch, future, window))
            self._queued += 1
            try:
                return await future
            finally:
                self._queued -= 1

    async def claim(self, limit: int) -> list[OutboxRow]:
        """The oldest pending events in (priority, seq) order not already claimed, one row
        object per envelope."""
        writer = self._require()
        if self._claimer is None:
            raise StorageError("outbox is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._claimer, self.store.claim, limit
            )
        except sqlite3.Error as exc:
            writer.note_error(exc)
            raise StorageError(f"outbox read failed: {exc}") from exc
        except RuntimeError as exc:  # the executor was shut down: the outbox is closing
            raise StorageError("outbox is closed") from exc

    def release(self, seqs: Sequence[int] | None = None) -> None:
        """Give claimed events back (link lost before their ack): they will be claimed again."""
        self.store.release(seqs)

    async def ack(self, seqs: Sequence[int]) -> None:
        """The broker confirmed these events; returns once the rows they complete are
        deleted (within `ack_window_ms`, riding along with other commits). A row shared by
        several events goes only when all of them are acked."""
        if not seqs:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._require().submit(AckJob(list(seqs), future))
        await future
        self.health.progress("acked", len(seqs))

    async def wait_for_rows(self, timeout: float | None = None) -> None:
        """Return when a row was committed since the last call (or after `timeout`)."""
        try:
            async with asyncio.timeout(timeout):
                await self._new_rows.wait()
        except TimeoutError:
            return
        self._new_rows.clear()

    def _update_rates(self) -> None:
        now = time.monotonic()
        written = float(self.store.totals.committed()["written"])
        acked = float(self.store.totals.get("acked"))
        if self._rates is not None:
            then, was_written, was_acked = self._rates
            elapsed = max(now - then, 1e-6)
            self._rate_facts = {
                "write_rate_per_s": round((written - was_written) / elapsed, 2),
                "ack_rate_per_s": round((acked - was_acked) / elapsed, 2),
            }
        self._rates = (now, written, acked)

    def stats(self) -> dict[str, Any]:
        """Facts for the status page, metrics and the birth (no database access: cheap and
        non-blocking)."""
        store, writer = self.store, self._writer
        oldest = store.oldest_created
        quarantined = store.quarantined
        return {
            "epoch": store.epoch,
            **store.totals.committed(),
            "claimed_rows": len(store.claims),
            "transactions": store.transactions,
            "oldest_pending_age_s": None if oldest is None else max(0.0, store.clock() - oldest),
            "file_bytes": file_bytes(self.path),
            "quarantined_file": None if quarantined is None else quarantined.moved_to.name,
            "epoch_change": None if store.loss is None else store.loss.cause,
            **self._rate_facts,
            **self._wear.facts(),
            "degraded": None if writer is None else writer.degraded,
            "disk_reserve": _reserve_state(writer, self.config),
            "last_error": "" if writer is None else writer.last_error,
            "queued_puts": self._queued,
            "synchronous": self.config.synchronous,
            "max_bytes": self.config.max_bytes,
        }


def _reserve_state(writer: Writer | None, config: OutboxConfig) -> str:
    if config.disk_reserve_bytes == 0:
        return "off"
    if writer is None:
        return "unknown"
    return "missing" if writer.reserve_missing else "ok"
