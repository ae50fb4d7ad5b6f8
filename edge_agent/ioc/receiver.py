"""The provincial receiver: broker → intake → group commit → acknowledgement.

The event loop only moves bytes: each message the broker delivers goes, untouched, into the
writer's inbox. The writer thread takes everything waiting (up to a group's limits), checks
it (`Intake`), writes it in one transaction (`Store.write`), and only then hands the
messages back to the loop to be acknowledged on the link that delivered them. A receiver
that dies between receiving and committing has acknowledged nothing: the broker, holding
the persistent session, delivers it again, and the store drops what it already has by
`(node, epoch, seq)`. Between groups the writer scans for holes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from edge_agent.backoff import Backoff
from edge_agent.ioc.broker import Subscriber, Subscription
from edge_agent.ioc.intake import DataMessage, Intake, Invalid, Refusal, StatusMessage
from edge_agent.ioc.metrics import ReceiverMetrics
from edge_agent.ioc.store import Store
from edge_agent.sync.link import Link, LinkOptions, Message

log = logging.getLogger(__name__)

Item = tuple[Link, Message]


@dataclass(frozen=True)
class ReceiverOptions:
    prefix: str = "ioc/v1"
    share_group: str | None = None
    hole_timeout_s: float = 300.0
    max_group_messages: int = 2000
    max_group_events: int = 20_000
    max_payload_bytes: int = 16 * 1024 * 1024
    max_inflated_bytes: int = 64 * 1024 * 1024
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.hole_timeout_s < 0:
            raise ValueError("the hole timeout cannot be negative")
        if self.max_group_messages < 1 or self.max_group_events < 1:
            raise ValueError("a group holds at least one message")

    @property
    def scan_interval_s(self) -> float:
        return min(10.0, max(0.2, self.hole_timeout_s / 4))


class _Limiter:
    """At most one log line per key every `period_s`, saying how many were held back."""

    def __init__(self, period_s: float = 10.0) -> None:
        self.period_s = period_s
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, text: str, *args: object) -> None:
        now = time.monotonic()
        last, held = self._last.get(key, (0.0, 0))
        if now - last < self.period_s:
            self._last[key] = (last, held + 1)
            return
        self._last[key] = (now, 0)
        if held:
            text += " (%d more since the last line)"
            args = (*args, held)
        log.warning(text, *args)


@dataclass
class _Group:
    items: list[Item] = field(default_factory=list)
    data: list[DataMessage] = field(default_factory=list)
    statuses: list[StatusMessage] = field(default_factory=list)
    events: int = 0


class Receiver:
    """An async context manager: the store opens on enter (errors raise there), `run()`
    receives until cancelled, exit commits what is waiting and closes the store."""

    def __init__(
        self,
        link: LinkOptions,
        open_store: Callable[[], Store],
        *,
        options: ReceiverOptions | None = None,
        metrics: ReceiverMetrics | None = None,
    ) -> None:
        self.options = options or ReceiverOptions()
        self.metrics = metrics or ReceiverMetrics()
        self.intake = Intake(
            self.options.prefix,
            max_payload_bytes=self.options.max_payload_bytes,
            max_inflated_bytes=self.options.max_inflated_bytes,
        )
        self.subscriber = Subscriber(
            link,
            Subscription(self.options.prefix, self.options.share_group),
            self._deliver,
            backoff=Backoff(self.options.reconnect_min_s, self.options.reconnect_max_s),
            on_state=lambda up: self.metrics.connected.set(1 if up else 0),
        )
        self._open_store = open_store
        self._store: Store | None = None
        self._inbox: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._crashed: asyncio.Future[None] | None = None
        self._limiter = _Limiter()
        self.commits = 0

    async def __aenter__(self) -> Receiver:
        self._loop = asyncio.get_running_loop()
        self._crashed = self._loop.create_future()
        self._store = await asyncio.to_thread(self._open_store)
        self._thread = threading.Thread(target=self._write_loop, name="ioc-writer", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._store is not None:
            self._store.close()
            self._store = None

    async def run(self) -> None:
        """Receive until cancelled; raises what killed the writer thread, if anything did."""
        assert self._crashed is not None
        receiving = asyncio.create_task(self.subscriber.run(), name="ioc-subscriber")
        try:
            await asyncio.wait([receiving, self._crashed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
        if self._crashed.done():
            self._crashed.result()
        receiving.result()

    # -- loop thread ------------------------------------------------------------------

    def _deliver(self, link: Link, message: Message) -> None:
        self.metrics.queued.inc()
        self._inbox.put((link, message))

    def _acknowledge(self, items: list[Item]) -> None:
        for link, message in items:
            link.ack(message)  # False for a link gone since: the broker sends it again
        self.metrics.queued.dec(len(items))

    def _writer_failed(self, exc: BaseException) -> None:
        if self._crashed is not None and not self._crashed.done():
            self._crashed.set_exception(exc)

    # -- writer thread ----------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            self._write_groups()
        except BaseException as exc:
            log.exception("the receiver's writer thread failed")
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._writer_failed, exc)

    def _write_groups(self) -> None:
        interval = self.options.scan_interval_s
        next_scan = time.monotonic() + interval
        stopping = False
        while not stopping:
            try:
                first = self._inbox.get(timeout=max(0.0, next_scan - time.monotonic()))
            except queue.Empty:
                first = None
            else:
                stopping = first is None
            group = _Group()
            item = first
            # Everything that arrived while the last commit ran, up to the group's limits
            # (events counted after decoding: a compressed batch may hold thousands).
            while item is not None:
                self._take(group, item)
                if (
                    len(group.items) >= self.options.max_group_messages
                    or group.events >= self.options.max_group_events
                ):
                    break
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
            if group.items:
                if group.data or group.statuses:
                    self._write(group.data, group.statuses)
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._acknowledge, group.items)
            if stopping or time.monotonic() >= next_scan:
                self._scan()
                next_scan = time.monotonic() + interval

    def _take(self, group: _Group, item: Item) -> None:
        message = item[1]
        group.items.append(item)
        parsed = self.intake.parse(message.topic, message.payload, retained=message.retain)
        kind = "status" if message.topic.endswith("/status") else "data"
        if kind == "data" and message.topic.endswith("/data/batch"):
            kind = "batch"
        self.metrics.messages.labels(kind).inc()
        if isinstance(parsed, Refusal):
            self._refused(message.topic, parsed)
        elif isinstance(parsed, DataMessage):
            for refusal in parsed.refused:
                self._refused(message.topic, refusal)
            group.data.append(parsed)
            group.events += len(parsed.envelopes)
        elif isinstance(parsed, StatusMessage):
            group.statuses.append(parsed)

    def _refused(self, topic: str, refusal: Refusal) -> None:
        self.metrics.invalid.labels(refusal.reason.value).inc(refusal.events)
        self._limiter.warn(
            refusal.reason.value, "refused on %s (%s): %s", topic, refusal.reason, refusal.detail
        )

    def _write(self, data: list[DataMessage], statuses: list[StatusMessage]) -> None:
        assert self._store is not None
        retry = Backoff(0.2, 10.0)
        while True:
            started = time.monotonic()
            try:
                result = self._store.write(data, statuses, time.time())
                break
            except self._store.transient as exc:
                self.metrics.store_errors.inc()
                self._limiter.warn("store", "commit failed, retrying: %s", exc)
                time.sleep(retry.next())
            except Exception:
                if len(data) + len(statuses) == 1:
                    self.metrics.unstorable.inc()
                    node = data[0].node if data else statuses[0].node
                    log.exception("cannot store a message of node %s", node)
                    return
                # Something in this group the store cannot take: find it, store the rest.
                for message in data:
                    self._write([message], [])
                for status in statuses:
                    self._write([], [status])
                return
        self.commits += 1
        self.metrics.commit_seconds.observe(time.monotonic() - started)
        self.metrics.events.inc(result.stored)
        self.metrics.duplicates.inc(result.duplicates)
        if result.newest_ts is not None:
            self.metrics.lag.set(max(0.0, time.time() - result.newest_ts))

    def _scan(self) -> None:
        assert self._store is not None
        try:
            report = self._store.scan_holes(time.time(), self.options.hole_timeout_s)
        except self._store.transient as exc:
            self._limiter.warn("scan", "hole scan failed: %s", exc)
            return
        self.metrics.open_holes.set(report.open)
        self.metrics.holes_opened.inc(report.opened)
        self.metrics.holes_closed.inc(report.closed)
        if report.opened or report.closed:
            log.info(
                "holes: %d opened, %d closed, %d open", report.opened, report.closed, report.open
            )


__all__ = ["Invalid", "Receiver", "ReceiverOptions"]
