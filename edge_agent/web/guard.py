"""The status server's defence against slow and idle clients.

Every connection must deliver a whole request header within `header_timeout_s` of opening
(or of its previous response); the number of connections is capped below the process's file
descriptor limit, so the outbox, the broker link and the cameras always find an fd. When the
cap is reached, the connection that has waited longest without a request is closed to make
room; only when every connection is busy with a request is the new one refused. What was
shed is logged at most once a minute, and so are asyncio's accept() errors should the
process run out of descriptors for another reason.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger(__name__)

MIN_CONNECTIONS = 8
ACCEPT_ERROR = "socket.accept() out of system resource"


def connection_cap(configured: int, fd_reserve: int, backlog: int) -> int:
    """`configured`, lowered to the descriptor limit minus the reserve and the burst (never
    below a few, so that a tiny limit still leaves the page reachable).

    The burst: asyncio accepts up to `backlog` sockets in one loop turn before the guard
    sees them (and may do so again before they are admitted), and a connection closed to
    make room frees its descriptor only on the next turn."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return min(configured, max(MIN_CONNECTIONS, soft - fd_reserve - 3 * backlog))


class RateLimitedLog:
    """Counts events by kind and says so at most once per `interval_s`."""

    def __init__(self, logger: logging.Logger, message: str, *, interval_s: float = 60.0):
        self.logger = logger
        self.message = message
        self.interval_s = interval_s
        self._counts: dict[str, int] = {}
        self._last: float | None = None

    def note(self, kind: str) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._counts:
            return
        if not force and self._last is not None and now - self._last < self.interval_s:
            return
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(self._counts.items()))
        self.logger.warning(self.message, summary)
        self._counts.clear()
        self._last = now


class AcceptErrorFilter(logging.Filter):
    """Lets one of asyncio's accept() error records through per `interval_s` (asyncio logs
    one per waiting connection per loop turn, with a traceback each)."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: float | None = None
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(ACCEPT_ERROR):
            return True
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval_s:
            self._suppressed += 1
            return False
        if self._suppressed:
            record.msg = f"{record.msg}\n({self._suppressed} more like it suppressed)"
            record.exc_info = None
        self._last, self._suppressed = now, 0
        return True


class _Connection(asyncio.Protocol):
    """Stands between asyncio and aiohttp's protocol, forwarding every call."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.requests = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard.admit(self):
            transport.abort()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def close(self, why: str) -> None:
        self.guard.shed.note(why)
        if self.transport is not None:
            self.transport.abort()


class ConnectionGuard:
    """The connection cap and the header deadline of one listening server."""

    def __init__(self, *, limit: int, header_timeout_s: float) -> None:
        self.limit = limit
        self.header_timeout_s = header_timeout_s
        self.shed = RateLimitedLog(
            log, f"status page: connections closed to protect the node (limit {limit}): %s"
        )
        self.counters = {"accepted": 0, "timed_out": 0, "evicted": 0, "refused": 0}
        self._open: dict[asyncio.BaseTransport, _Connection] = {}
        # Connections waiting for a request header, oldest first.
        self._waiting: OrderedDict[_Connection, None] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active(self) -> int:
        return len(self._open)

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            return _Connection(self, inner())

        return make

    def admit(self, conn: _Connection) -> bool:
        if len(self._open) >= self.limit:
            if not self._waiting:
                self.counters["refused"] += 1
                self.shed.note("refused (every connection busy)")
                return False
            oldest, _ = self._waiting.popitem(last=False)
            self.counters["evicted"] += 1
            self._forget_timer(oldest)
            oldest.close("waiting longest without a request")
            if oldest.transport is not None:
                self._open.pop(oldest.transport, None)
        assert conn.transport is not None
        self._open[conn.transport] = conn
        self.counters["accepted"] += 1
        self._wait_for_request(conn)
        return True

    def forget(self, conn: _Connection) -> None:
        self._forget_timer(conn)
        self._waiting.pop(conn, None)
        if conn.transport is not None and self._open.get(conn.transport) is conn:
            del self._open[conn.transport]

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        conn = self._open.get(transport) if transport is not None else None
        if conn is not None:
            conn.requests += 1
            self._forget_timer(conn)
            self._waiting.pop(conn, None)

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        conn = self._open.get(transport) if transport is not None else None
        if conn is not None:
            self._wait_for_request(conn)

    def _wait_for_request(self, conn: _Connection) -> None:
        self._forget_timer(conn)
        self._waiting[conn] = None
        self._waiting.move_to_end(conn)
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        conn.timer = loop.call_later(self.header_timeout_s, self._timed_out, conn)

    def _timed_out(self, conn: _Connection) -> None:
        conn.timer = None
        if conn not in self._waiting:
            return
        del self._waiting[conn]
        if conn.requests:
            # A quiet keep-alive connection closing after its responses is normal.
            if conn.transport is not None:
                conn.transport.abort()
            return
        self.counters["timed_out"] += 1
        conn.close("sent no whole request header in time")

    @staticmethod
    def _forget_timer(conn: _Connection) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
