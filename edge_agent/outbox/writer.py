"""The outbox's own writer thread: group commit per priority class, expiry, disk space.

Producers' events and the publisher's acks queue here. The thread takes the first job and
collects more until the earliest commit deadline among them: a job's deadline is its arrival
plus its class's window (alerts at once, readings after `commit_window_reading_ms`, acks
after `ack_window_ms`), or sooner when `commit_max_rows` events wait. One transaction (one
fsync) commits them all, and every waiting put() and ack() returns after it; futures are
settled on the event loop once per transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.contract import utc_iso
from edge_agent.errors import StorageError
from edge_agent.health import Reason, reason
from edge_agent.outbox.reserve import DiskReserve, free_bytes
from edge_agent.outbox.rows import NewEvent
from edge_agent.outbox.schema import SQLITE_FULL, error_code, is_corrupt
from edge_agent.outbox.store import Store

log = logging.getLogger(__name__)

RETRY_MAX_S = 2.0
ROOM_MARGIN_BYTES = 1024 * 1024
GUARD_MARGIN_BYTES = 256 * 1024
HEARTBEAT_S = 1.0
# A commit carrying this many events or acks spreads its fixed cost (fsync, index and counter
# pages) well: from then on the batch waits only the short group-commit window for the rest
# of a burst, whatever its classes' windows, so a busy outbox is never slowed by them.
ENOUGH_EVENTS = 128
WARN_EVERY_S = 60.0


@dataclass
class PutJob:
    events: list[NewEvent]
    future: asyncio.Future[list[int]]
    window_s: float


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
        self.last_error = ""
        self.write_errors = 0
        self.fatal: BaseException | None = None
        self.native_id: int | None = None
        self.reserve = DiskReserve(
            store.path.with_name(store.path.name + ".reserve"), store.config.disk_reserve_bytes
        )
        self._failure: Reason | None = None
        self.reserve_missing = False
        self._reported: Reason | None = None
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._clean = False
        self._next_expire = 0.0
        self._warned: dict[str, float] = {}
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

    @property
    def degraded(self) -> Reason | None:
        """Why writes are not all well, most serious first (None: they are)."""
        if self._failure is not None:
            return self._failure
        if self.store.growth_limited:
            return reason(
                "disk_full_evicting",
                "disk full: the oldest low-priority rows make room for new ones",
            )
        if self.reserve_missing:
            return reason(
                "no_disk_reserve",
                f"no disk reserve: no room for its {self.reserve.size} bytes of ballast",
                bytes=self.reserve.size,
            )
        return None

    def guard_bytes(self) -> int:
        """Free space below which the database stops growing: what its checkpoints may
        still need, and a margin for the commits until the next look."""
        return self.store.space_needed() + GUARD_MARGIN_BYTES

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        try:
            while self._step():
                pass
        finally:
            self.store.close(clean=self._clean and self.fatal is None)

    def _step(self) -> bool:
        try:
            job = self._jobs.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            self.heartbeat = time.monotonic()
            self._housekeeping()
            return True
        self.heartbeat = time.monotonic()
        if isinstance(job, _Stop):
            self._clean = True
            return False
        if isinstance(job, CallJob):
            self._settle([(job.future, self._invoke(job.fn))])
            return True
        batch: list[PutJob | AckJob] = [job]
        calls: list[CallJob] = []
        more = self._gather(batch, calls)
        self._commit(batch)
        self._settle([(c.future, self._invoke(c.fn)) for c in calls])
        self._housekeeping()
        return more

    def _window(self, job: PutJob | AckJob) -> float:
        return job.window_s if isinstance(job, PutJob) else self.store.config.ack_window_ms / 1000

    def _gather(self, batch: list[PutJob | AckJob], calls: list[CallJob]) -> bool:
        """Collect jobs until the earliest deadline; False when a stop arrived."""
        config = self.store.config
        rows = sum(_weight(j) for j in batch)
        deadline = time.monotonic() + self._window(batch[0])
        enough = False
        while rows < config.commit_max_rows:
            if not enough and rows >= ENOUGH_EVENTS:
                enough = True
                deadline = min(deadline, time.monotonic() + config.commit_window_ms / 1000)
            remaining = deadline - time.monotonic()
            try:
                job = (
                    self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
                )
            except queue.Empty:
                return True
            if isinstance(job, _Stop):
                self._clean = True
                return False
            if isinstance(job, CallJob):
                calls.append(job)
                deadline = time.monotonic()  # someone waits on it: commit what is here
                continue
            batch.append(job)
            rows += _weight(job)
            deadline = min(deadline, time.monotonic() + self._window(job))
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
        stalled_since: float | None = None
        while True:
            try:
                seqs = self.store.write(events, acks)
                break
            except (sqlite3.Error, OSError) as exc:  # OSError: the seq ledger's write
                self.note_error(exc)
                if self._closing.is_set() or self.fatal is not None:
                    failure = StorageError(f"outbox write failed: {exc}")
                    self._settle([(j.future, failure) for j in batch])
                    return
                self._failed(exc)
                if _full(exc) and self._make_room(events):
                    continue  # rows were evicted: their pages take the new ones now
                stalled_since = stalled_since or self.store.clock()
                self._closing.wait(min(RETRY_MAX_S, 0.05 * 2**attempt))
                attempt += 1
                self.heartbeat = time.monotonic()
            except Exception as exc:
                log.exception("outbox write failed")
                self._settle([(j.future, exc) for j in batch])
                return
        why, self._failure = self._failure, None
        settled: list[tuple[asyncio.Future[Any], Any]] = []
        at = 0
        for job in batch:
            if isinstance(job, PutJob):
                settled.append((job.future, seqs[at : at + len(job.events)]))
                at += len(job.events)
            else:
                settled.append((job.future, None))
        self._settle(settled, committed=bool(events))
        self._state_changed()
        if stalled_since is not None and why is not None:
            self._report_stall(stalled_since, why)

    def _report_stall(self, since: float, failure: Reason) -> None:
        """Producers waited for this commit: say so upstream, with when and why, so that the
        hole in the observations is known, not guessed."""
        now = self.store.clock()
        log.info("outbox writes succeed again after %.1f s: %s", now - since, failure.text)
        data = {
            "alert": "outbox_stalled",
            "severity": "warning",
            "cause": failure.code,
            "detail": failure.text,
            "from": utc_iso(since),
            "to": utc_iso(now),
            "duration_s": round(now - since, 3),
        }
        try:
            self.store.write([self.store.alert_event(data)], [])
        except (sqlite3.Error, OSError) as exc:
            log.warning("outbox: the report of a write stall was not stored: %s", exc)
            return
        self._settle([], committed=True)

    def _make_room(self, events: list[NewEvent]) -> bool:
        """On a full disk: free the ballast, stop the file growing, empty the WAL, and drop
        the oldest low-priority rows so that their pages take the new ones. True when rows
        were dropped, or when the disk turned out to have room again."""
        free = free_bytes(self.store.path.parent)
        with contextlib.suppress(sqlite3.Error):
            if free is not None and self._room_returned(free, self.guard_bytes()):
                return True
        if self.reserve.release():
            log.warning("outbox: released the %d-byte disk reserve", self.reserve.size)
        try:
            self.store.checkpoint()
            if not self.store.growth_limited:
                self.store.limit_growth()
        except sqlite3.Error as exc:
            log.debug("outbox checkpoint on a full disk failed: %s", exc)
        size = 2 * self.store.page_bytes + sum(len(e.tail) for e in events)
        try:
            dropped = self.store.evict_for_space(size)
            self.store.checkpoint()
        except sqlite3.Error as exc:
            log.debug("eviction on a full disk failed: %s", exc)
            return False
        if dropped:
            self._warn_every(
                "evict",
                "outbox: disk full, dropped %d old low-priority events to make room",
                dropped,
            )
        return dropped > 0

    def _housekeeping(self) -> None:
        if self.fatal is not None:
            return
        self._maybe_expire()
        self.watch_space()

    def watch_space(self) -> None:
        """Stop the file growing before the disk is full, and let it grow again once the
        disk has room; keep the reserve in place whenever it fits."""
        free = free_bytes(self.store.path.parent)
        if free is None:
            return
        guard = self.guard_bytes()
        try:
            if not self.store.growth_limited and free < guard:
                self.store.limit_growth()
                self.store.checkpoint()
                log.warning(
                    "outbox: %d bytes free on the disk: the outbox stops growing; new rows"
                    " take the place of the oldest low-priority ones",
                    free,
                )
            else:
                self._room_returned(free, guard)
        except sqlite3.Error as exc:
            log.debug("outbox growth limit not changed: %s", exc)
        self.reserve.maybe_restore(keep_free=guard + ROOM_MARGIN_BYTES)
        self.reserve_missing = self.reserve.missing
        self._state_changed()

    def _room_returned(self, free: int, guard: int) -> bool:
        """While growth is limited, lift the limit once the disk has room again."""
        if not self.store.growth_limited:
            return False
        missing = self.reserve.size if self.reserve.missing else 0
        if free < guard + ROOM_MARGIN_BYTES + missing:
            return False
        self.store.restore_growth()
        log.info("outbox: the disk has room again (%d bytes free)", free)
        return True

    def _maybe_expire(self) -> None:
        now = time.monotonic()
        if now < self._next_expire:
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

    def note_error(self, exc: sqlite3.Error | OSError) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, sqlite3.Error) and is_corrupt(exc) and self.fatal is None:
            # Corruption found while running: only a restart (quick_check, quarantine) helps.
            self.fatal = exc
            log.error("outbox database is corrupt while running: %s", exc)
            self._state_changed(force=True)

    def _failed(self, exc: sqlite3.Error | OSError) -> None:
        if _full(exc):
            why = reason("disk_full", "disk full")
        else:
            why = reason("write_failing", f"write failing: {exc}", error=str(exc))
        if self._failure is None:
            self._warn_every("failed", "outbox %s; producers wait, retrying", why.text)
        self.write_errors += 1
        self._failure = why
        self._state_changed(force=True)

    def _warn_every(self, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now >= self._warned.get(key, 0.0):
            self._warned[key] = now + WARN_EVERY_S
            log.warning(message, *args)

    def _state_changed(self, *, force: bool = False) -> None:
        current = self.degraded
        if current == self._reported and not force:
            return
        self._reported = current
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


def _weight(job: PutJob | AckJob) -> int:
    # Acks count like events: a drain's acks of a backlog are committed as promptly as a
    # burst of puts, so the rows they hold in the claim book stay few.
    return len(job.events) if isinstance(job, PutJob) else len(job.seqs)


def _full(exc: sqlite3.Error | OSError) -> bool:
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return error_code(exc) == SQLITE_FULL


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
