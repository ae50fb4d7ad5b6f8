"""The outbox's own writer thread: group commit, expiry, and riding out a full disk.

Producers' events and the publisher's acks queue here; the thread takes the first, collects
more for `commit_window_ms` (or `commit_max_rows`), and commits them in one transaction, so a
burst costs one fsync. Futures are settled on the event loop once per transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import StorageError
from edge_agent.health import Reason, reason
from edge_agent.outbox.reserve import DiskReserve
from edge_agent.outbox.rows import NewEvent
from edge_agent.outbox.schema import SQLITE_FULL, error_code, is_corrupt
from edge_agent.outbox.store import Store

log = logging.getLogger(__name__)

RETRY_MAX_S = 2.0
EVICT_MIN_ROWS = 64
ROOM_MARGIN_BYTES = 1024 * 1024
HEARTBEAT_S = 1.0


@dataclass
class PutJob:
    events: list[NewEvent]
    future: asyncio.Future[list[int | BaseException]]


@dataclass
class AckJob:
    seqs: list[int]
    future: asyncio.Future[None]


@dataclass
class CallJob:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]


class _Stop:
    pass


Job = PutJob | AckJob | CallJob | _Stop


class Writer:
    """The one thread that touches the outbox database for writing."""

    def __init__(
        self,
        store: Store,
        *,
        loop: asyncio.AbstractEventLoop,
        on_commit: Callable[[], None],
        on_state: Callable[[], None],
    ) -> None:
        self.store = store
        self.loop = loop
        self.on_commit = on_commit
        # Called on the loop whenever `degraded` or `fatal` changes: the outbox component,
        # not this thread, writes the health entry.
        self.on_state = on_state
        self.heartbeat = time.monotonic()
        self.degraded: Reason | None = None
        self.last_error = ""
        self.write_errors = 0
        self.fatal: BaseException | None = None
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._next_expire = 0.0
        self.reserve = DiskReserve(
            store.path.with_name(store.path.name + ".reserve"), store.config.disk_reserve_bytes
        )
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    async def call(self, fn: Callable[[], Any]) -> Any:
        future: asyncio.Future[Any] = self.loop.create_future()
        self.submit(CallJob(fn, future))
        return await future

    def stop(self, timeout: float) -> None:
        """Commit what is queued, then end the thread (within `timeout` while degraded)."""
        self.submit(_Stop())
        self._thread.join(timeout)
        self._closing.set()
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._step():
                pass
        finally:
            self.store.close()

    def _step(self) -> bool:
        try:
            job = self._jobs.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            self.heartbeat = time.monotonic()
            self._maybe_expire()
            return True
        self.heartbeat = time.monotonic()
        if isinstance(job, _Stop):
            return False
        if isinstance(job, CallJob):
            self._settle([(job.future, self._invoke(job.fn))])
            return True
        batch: list[PutJob | AckJob] = [job]
        calls: list[CallJob] = []
        more = self._gather(batch, calls)
        self._commit(batch)
        self._settle([(c.future, self._invoke(c.fn)) for c in calls])
        self._maybe_expire()
        return more

    def _gather(self, batch: list[PutJob | AckJob], calls: list[CallJob]) -> bool:
        config = self.store.config
        rows = sum(len(j.events) if isinstance(j, PutJob) else 1 for j in batch)
        deadline = time.monotonic() + config.commit_window_ms / 1000
        while rows < config.commit_max_rows:
            remaining = deadline - time.monotonic()
            try:
                job = (
                    self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
                )
            except queue.Empty:
                return True
            if isinstance(job, _Stop):
                return False
            if isinstance(job, CallJob):
                calls.append(job)
                continue
            batch.append(job)
            rows += len(job.events) if isinstance(job, PutJob) else 1
        return True

    def _invoke(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except sqlite3.Error as exc:
            self.note_error(exc)
            return StorageError(f"outbox read failed: {exc}")
        except Exception as exc:
            return exc

    def _commit(self, batch: list[PutJob | AckJob]) -> None:
        events = [e for j in batch if isinstance(j, PutJob) for e in j.events]
        acks = [s for j in batch if isinstance(j, AckJob) for s in j.seqs]
        attempt = 0
        while True:
            try:
                results = self.store.write(events, acks)
                break
            except sqlite3.Error as exc:
                self.note_error(exc)
                if self._closing.is_set() or self.fatal is not None:
                    failure = StorageError(f"outbox write failed: {exc}")
                    self._settle([(j.future, failure) for j in batch])
                    return
                self._degrade(exc)
                if error_code(exc) == SQLITE_FULL:
                    self._make_room(len(events) + len(acks))
                self._closing.wait(min(RETRY_MAX_S, 0.05 * 2**attempt))
                attempt += 1
                self.heartbeat = time.monotonic()
            except Exception as exc:
                log.exception("outbox write failed")
                self._settle([(j.future, exc) for j in batch])
                return
        self._room_returned()
        if self.store.growth_limited:
            self._degrade(None)
        else:
            self._recovered()
            self.reserve.maybe_restore()
        settled: list[tuple[asyncio.Future[Any], Any]] = []
        at = 0
        for job in batch:
            if isinstance(job, PutJob):
                settled.append((job.future, results[at : at + len(job.events)]))
                at += len(job.events)
            else:
                settled.append((job.future, None))
        self._settle(settled, committed=bool(events))

    def _make_room(self, rows: int) -> None:
        """On a full disk: free the ballast, stop the file growing, empty the WAL, and drop
        the oldest low-priority rows so that their pages take the new ones."""
        if self._room_returned():
            return
        if self.reserve.release():
            log.warning("outbox: released the %d-byte disk reserve", self.reserve.size)
        try:
            self.store.checkpoint()
            if not self.store.growth_limited:
                self.store.limit_growth()
        except sqlite3.Error as exc:
            log.debug("outbox checkpoint on a full disk failed: %s", exc)
        try:
            dropped = self.store.evict_for_space(max(rows, EVICT_MIN_ROWS))
            self.store.checkpoint()
        except sqlite3.Error as exc:
            log.debug("eviction on a full disk failed: %s", exc)
            return
        if dropped:
            log.warning("outbox: dropped %d old low-priority rows to make room", dropped)

    def _room_returned(self) -> bool:
        """While growth is limited, lift the limit once the disk has room again."""
        if not self.store.growth_limited:
            return False
        try:
            free = shutil.disk_usage(self.store.path.parent).free
        except OSError:
            return False
        if free < 2 * self.reserve.size + ROOM_MARGIN_BYTES:
            return False
        try:
            self.store.restore_growth()
        except sqlite3.Error:
            return False
        log.info("outbox: the disk has room again (%d bytes free)", free)
        return True

    def _maybe_expire(self) -> None:
        now = time.monotonic()
        if now < self._next_expire or self.fatal is not None:
            return
        self._next_expire = now + self.store.config.expire_interval_s
        try:
            expired = self.store.expire()
        except sqlite3.Error as exc:
            self.note_error(exc)
            log.warning("outbox expiry failed: %s", exc)
            return
        if expired:
            log.info("outbox: %d rows passed their TTL and were dropped", expired)
            self.loop.call_soon_threadsafe(self.on_commit)

    def note_error(self, exc: sqlite3.Error) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if is_corrupt(exc) and self.fatal is None:
            # Corruption found while running: only a restart (quick_check, quarantine) helps.
            self.fatal = exc
            log.error("outbox database is corrupt while running: %s", exc)
            self._state_changed()

    def _degrade(self, exc: sqlite3.Error | None) -> None:
        if exc is None:
            why = reason(
                "disk_full_evicting",
                "disk full: the oldest low-priority rows make room for new ones",
            )
        elif error_code(exc) == SQLITE_FULL:
            why = reason("disk_full", "disk full")
        else:
            why = reason("write_failing", f"write failing: {exc}", error=str(exc))
        if self.degraded is None:
            log.warning("outbox %s; producers wait, retrying", why.text)
        if exc is not None:
            self.write_errors += 1
        if why != self.degraded or exc is not None:
            self.degraded = why
            self._state_changed()

    def _recovered(self) -> None:
        if self.degraded is not None:
            log.info("outbox writes succeed again after: %s", self.degraded.text)
            self.degraded = None
            self._state_changed()

    def _state_changed(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self.loop.call_soon_threadsafe(self.on_state)

    def _settle(
        self, pairs: list[tuple[asyncio.Future[Any], Any]], committed: bool = False
    ) -> None:
        if not pairs and not committed:
            return
        # A closed loop (RuntimeError) means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_settle, pairs, self.on_commit if committed else None)


def _settle(
    pairs: list[tuple[asyncio.Future[Any], Any]], on_commit: Callable[[], None] | None
) -> None:
    for future, value in pairs:
        if future.done():
            continue
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)
    if on_commit is not None:
        on_commit()
