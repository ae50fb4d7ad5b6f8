"""Security events for the province's SOC: every rejected command, failed or rate-limited page
login, accepted `config.set` and rollback becomes an `audit` event at alert priority.

A leaf module (it imports only `contract`): `app.py` builds one `Auditor`, binds its sink to the
outbox and hands it to whoever sees such events (sync, the status page). A flood is
summarised, not forwarded: per `(event, code, source)` the first occurrence goes out at once,
and after that at most one event per window carries the count and the first and last time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from edge_agent.contract import AUDIT_EVENTS, audit_data

log = logging.getLogger(__name__)

AuditSink = Callable[[dict[str, Any], float], Awaitable[Any]]
"""`await sink(data, ts)`: commit one `audit` event (app.py binds it to the outbox)."""

SOURCE_MAX = 128
DETAIL_MAX = 512
# Past this many distinct keys in one window (a sender varying its client id), new keys
# share one summary with the source "*".
MAX_KEYS = 256


@dataclass
class _Tally:
    window_end: float
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    detail: str = ""


class Auditor:
    """Takes audit records from anywhere on the event loop and emits rate-limited summaries.

    `record()` never blocks and never raises for what a sender controls (source and detail
    are cut to length); the events go out from `run()`, and `__aexit__` flushes what is still
    being counted. Use it as a component: `async with auditor:` and run `auditor.run()`.
    """

    name = "audit"

    def __init__(
        self,
        sink: AuditSink,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        self.sink = sink
        self.window_s = window_s
        self.clock = clock
        self._tallies: dict[tuple[str, str, str | None], _Tally] = {}
        self._due: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self.recorded = 0
        self.emitted = 0

    async def __aenter__(self) -> Auditor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_windows(force=True)
        await self._emit_due()

    def record(self, event: str, code: str, *, source: str | None = None, detail: str = "") -> None:
        """Note one occurrence. `event` is one of `contract.AUDIT_EVENTS` (anything else is a
        bug of the caller and raises ValueError); `code` says why (e.g. `bad_signature`);
        `source` is who, when known (an MQTT client id the broker told, a client IP)."""
        if event not in AUDIT_EVENTS:
            raise ValueError(f"audit event {event!r} is not one of {sorted(AUDIT_EVENTS)}")
        now = self.clock()
        self.recorded += 1
        source = source[:SOURCE_MAX] if source else None
        detail = detail[:DETAIL_MAX]
        key = (event, code, source)
        tally = self._tallies.get(key)
        if tally is None and len(self._tallies) >= MAX_KEYS:
            key = (event, code, "*")
            tally = self._tallies.get(key)
        if tally is None:
            # First of its kind in a window: said at once.
            self._tallies[key] = _Tally(window_end=now + self.window_s)
            self._queue(key, count=1, first=now, last=now, detail=detail)
            return
        if tally.count == 0:
            tally.first = now
        tally.count += 1
        tally.last = now
        tally.detail = detail

    def _queue(
        self,
        key: tuple[str, str, str | None],
        *,
        count: int,
        first: float,
        last: float,
        detail: str,
    ) -> None:
        event, code, source = key
        self._due.append(
            audit_data(
                event=event,
                code=code,
                source=source,
                detail=detail,
                count=count,
                first=first,
                last=last,
            )
        )
        self._wake.set()

    def _close_windows(self, *, force: bool = False) -> float | None:
        """Queue the summaries of ended windows; returns the next window end, if any."""
        now = self.clock()
        next_end: float | None = None
        for key, tally in list(self._tallies.items()):
            if not force and tally.window_end > now:
                next_end = tally.window_end if next_end is None else min(next_end, tally.window_end)
                continue
            if tally.count == 0:
                del self._tallies[key]
                continue
            self._queue(
                key, count=tally.count, first=tally.first, last=tally.last, detail=tally.detail
            )
            # At most one event per window: the next summary waits for the next window.
            self._tallies[key] = _Tally(window_end=now + self.window_s)
            next_end = (
                now + self.window_s if next_end is None else min(next_end, now + self.window_s)
            )
        return next_end

    async def _emit_due(self) -> None:
        while self._due:
            data = self._due.popleft()
            try:
                await self.sink(data, self.clock())
            except Exception as exc:  # an audit record must never take the node down
                log.warning("audit event %s/%s not stored: %s", data["event"], data["code"], exc)
                continue
            self.emitted += 1

    async def run(self) -> None:
        while True:
            next_end = self._close_windows()
            await self._emit_due()
            self._wake.clear()
            timeout = None if next_end is None else max(0.0, next_end - self.clock())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
