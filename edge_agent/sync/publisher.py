"""Outbox → broker: a sliding window of QoS 1 publishes, rows deleted only on PUBACK.

Live events go out one per message as soon as they are committed; when a claim returns a
backlog, the rows go out as one batch message (optionally zstd), behind a token bucket.
A sliding window, not "send a batch then wait for all acks": the latter stalls on Nagle's
algorithm at brokers without `set_tcp_nodelay`.

Per link, `drain()` and `acker()` run as sibling tasks in the link's TaskGroup (beside the
task that ends the group when the link goes); `settle()` runs after the group: it deletes
what the broker acknowledged and gives everything else back to the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from edge_agent.backoff import Backoff
from edge_agent.contract import (
    BATCH_CONTENT_TYPE,
    BATCH_ZSTD_CONTENT_TYPE,
    Topics,
    encode_batch,
)
from edge_agent.health import ComponentHealth, State, reason
from edge_agent.sync.link import Link, LinkLost, Refused

log = logging.getLogger(__name__)


class Row(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def stream(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


class OutboxSource(Protocol):
    """What sync needs from the outbox (app.py hands in the real one)."""

    @property
    def epoch(self) -> str: ...
    async def claim(self, limit: int) -> Sequence[Row]: ...
    async def ack(self, seqs: Sequence[int]) -> None: ...
    def release(self, seqs: Sequence[int] | None = None) -> None: ...
    async def wait_for_rows(self, timeout: float | None = None) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class TokenBucket:
    """Messages/s and bytes/s with one second of burst; a rate of 0 means no cap.

    A single message bigger than the byte burst still goes, and the debt delays the next."""

    def __init__(self, messages_per_s: float, bytes_per_s: float) -> None:
        self.rates = (messages_per_s, bytes_per_s)
        self.tokens = [messages_per_s, bytes_per_s]
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed = now - self.stamp
        self.stamp = now
        for i, rate in enumerate(self.rates):
            if rate > 0:
                self.tokens[i] = min(rate, self.tokens[i] + elapsed * rate)

    def delay(self, messages: int, nbytes: int) -> float:
        """Seconds to wait before sending; the tokens are taken now."""
        self._refill()
        wait = 0.0
        for i, (rate, need) in enumerate(zip(self.rates, (messages, nbytes), strict=True)):
            if rate <= 0:
                continue
            if self.tokens[i] < min(need, rate):
                wait = max(wait, (min(need, rate) - self.tokens[i]) / rate)
            self.tokens[i] -= need
        return wait

    async def take(self, messages: int, nbytes: int) -> None:
        wait = self.delay(messages, nbytes)
        if wait > 0:
            await asyncio.sleep(wait)


# One message in flight: its PUBACK future, the seqs it carries, its topic, batch or not.
Flight = tuple["asyncio.Future[None]", Sequence[int], str, bool]


class Publisher:
    """Drains the outbox over one link at a time."""

    def __init__(
        self,
        outbox: OutboxSource,
        topics: Topics,
        *,
        health: ComponentHealth,
        window: int = 20,
        batch_max: int = 500,
        batch_min: int = 20,
        batch_window: int = 4,
        compress: bool = False,
        rate: TokenBucket | None = None,
        beat_s: float = 60.0,
        refused_pause: Backoff | None = None,
    ) -> None:
        self.outbox = outbox
        self.topics = topics
        self.health = health
        self.window = window
        self.batch_max = batch_max
        self.batch_min = batch_min
        self.batch_window = batch_window
        self.compress = compress
        self.rate = rate or TokenBucket(0, 0)
        # The drain's watchdog promise: a wait for PUBACKs ends at the latest when the link
        # is declared dead, which the owner knows (connect timeout + 1.5 x keepalive).
        self.beat_s = beat_s
        self.refused_pause = refused_pause or Backoff(5.0, 120.0)
        self._inflight: deque[Flight] = deque()
        # Publishes not yet answered (PUBACK, refusal or link lost): the window counts these,
        # so the window frees as PUBACKs come, not when their rows are deleted.
        self._open = 0
        self._open_batches = 0
        self._sent = asyncio.Event()
        self._space = asyncio.Event()
        self._prefetch: asyncio.Future[Sequence[Row]] | None = None
        self._acking: list[int] = []
        self._resume_at = 0.0
        self._refused_at: float | None = None
        self._refusals_said: set[tuple[str, int]] = set()
        self.refusals = 0  # publishes the broker refused, ever (the owner compares per link)
        self.stats = {"messages": 0, "batches": 0, "events": 0, "bytes": 0}

    # -- the drain ----------------------------------------------------------------------

    async def drain(self, link: Link) -> None:
        """Publish claimed rows over `link` until the link's TaskGroup ends (never returns)."""
        buffer: deque[Row] = deque()
        # This publisher is the only claimer: rows a previous link left claimed are free.
        self.outbox.release()
        if self._refused_at is None:
            self.health.set_state(State.OK, reason("draining", "draining to the broker"))
        while True:
            self.health.beat(self.beat_s)
            pause = self._resume_at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            if self._open >= self.window or self._open_batches >= self.batch_window:
                self._space.clear()
                await self._space.wait()
                continue
            if not buffer:
                rows = await self._claim()
                if not rows:
                    self.health.set_facts(inflight=self._open, mode="live")
                    await self.outbox.wait_for_rows(timeout=self.beat_s / 2)
                    continue
                if self.batch_max > 1 and len(rows) >= self.batch_min:
                    await self._send_batch(link, rows)
                    continue
                buffer.extend(rows)
            row = buffer.popleft()
            await self.rate.take(1, len(row.payload))
            # No content-type property on single envelopes: the topic says what it is,
            # and packing MQTT 5 properties per message costs a fifth of the drain rate.
            topic = self.topics.data(row.stream)
            future = link.publish(topic, row.payload)
            future.add_done_callback(self._answered)
            self._open += 1
            self._inflight.append((future, (row.seq,), topic, False))
            self._sent.set()
            self.stats["messages"] += 1
            self.stats["events"] += 1
            self.stats["bytes"] += len(row.payload)

    async def _claim(self) -> Sequence[Row]:
        if self._prefetch is not None:
            rows = await self._claimed()
            if rows:
                return rows
        self._prefetch = asyncio.ensure_future(self.outbox.claim(self._claim_size()))
        return await self._claimed()

    async def _claimed(self) -> Sequence[Row]:
        # A claim is never cancelled (its thread would still mark rows as claimed after
        # settle() released them): it is awaited shielded here, and by settle().
        assert self._prefetch is not None
        rows = await asyncio.shield(self._prefetch)
        self._prefetch = None
        return rows

    def _claim_size(self) -> int:
        if self.batch_max > 1:
            return self.batch_max
        return max(2 * self.window, 64)

    async def _send_batch(self, link: Link, rows: Sequence[Row]) -> None:
        payload = encode_batch([r.payload for r in rows], compress=self.compress)
        await self.rate.take(1, len(payload))
        topic = self.topics.batch
        future = link.publish(
            topic,
            payload,
            content_type=BATCH_ZSTD_CONTENT_TYPE if self.compress else BATCH_CONTENT_TYPE,
        )
        future.add_done_callback(self._answered_batch)
        self._open += 1
        self._open_batches += 1
        self._inflight.append((future, tuple(r.seq for r in rows), topic, True))
        self._sent.set()
        if self._prefetch is None:
            # Backlog: fetch the next batch while this one is on the wire.
            self._prefetch = asyncio.ensure_future(self.outbox.claim(self._claim_size()))
        self.stats["messages"] += 1
        self.stats["batches"] += 1
        self.stats["events"] += len(rows)
        self.stats["bytes"] += len(payload)
        self.health.set_facts(inflight=self._open, mode="backlog")

    def _answered(self, future: asyncio.Future[None]) -> None:
        self._open -= 1
        self._space.set()

    def _answered_batch(self, future: asyncio.Future[None]) -> None:
        self._open -= 1
        self._open_batches -= 1
        self._space.set()

    # -- the acker ----------------------------------------------------------------------

    async def acker(self) -> None:
        """Delete PUBACKed rows in one outbox transaction per turn (never returns)."""
        while True:
            if not self._inflight:
                self._sent.clear()
                await self._sent.wait()
                continue
            head = self._inflight[0][0]
            if not head.done():
                # PUBACKs come in order (MQTT 4.6); asyncio.wait never cancels the future.
                await asyncio.wait((head,))
            acked: list[int] = []
            while self._inflight and self._inflight[0][0].done():
                future, seqs, topic, _batch = self._inflight[0]
                error = future.exception()
                if isinstance(error, LinkLost):
                    raise error  # the link's TaskGroup ends; settle() releases the rest
                self._inflight.popleft()
                if error is None:
                    acked.extend(seqs)
                elif isinstance(error, Refused):
                    self._refused(topic, error, seqs)
                else:
                    raise error
            if acked:
                await self._ack(acked)
                self._accepted()

    async def _ack(self, seqs: list[int]) -> None:
        # Kept until the delete is committed: if the acker is cancelled meanwhile, settle()
        # deletes them again (deleting is idempotent), so no confirmed row stays pending.
        self._acking = seqs
        await self.outbox.ack(seqs)
        self._acking = []
        self.health.progress("acked", len(seqs))

    def _refused(self, topic: str, error: Refused, seqs: Sequence[int]) -> None:
        self.outbox.release(seqs)
        self.refusals += 1
        self.health.count("rejected_by_broker", len(seqs))
        self._refused_at = time.monotonic()
        self._resume_at = self._refused_at + self.refused_pause.next()
        self.health.set_state(
            State.DEGRADED,
            reason(
                "publish_refused",
                f"broker refused publishes on {topic} ({error.name}, 0x{error.code:02X})",
                topic=topic,
                reason_code=error.code,
            ),
            error=str(error),
        )
        if (topic, error.code) not in self._refusals_said:
            self._refusals_said.add((topic, error.code))
            log.warning(
                "broker refused a publish on %s: %s (0x%02X); its events stay in the outbox"
                " and are retried",
                topic,
                error.name,
                error.code,
            )

    def _accepted(self) -> None:
        # Refusals end once publishes are accepted and none was refused for a whole pause.
        if self._refused_at is None:
            return
        if time.monotonic() - self._refused_at < 2 * self.refused_pause.peek():
            return
        self._refused_at = None
        self._refusals_said.clear()
        self.refused_pause.reset()
        self.health.set_state(State.OK, reason("draining", "draining to the broker"))
        log.info("broker accepts publishes again")

    # -- after the link -----------------------------------------------------------------

    async def settle(self) -> None:
        """After the link's tasks ended: delete what the broker acknowledged (even a PUBACK
        that came after the drain stopped), give every other row back to the outbox."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            await asyncio.wait((prefetch,))
            if not prefetch.cancelled():
                prefetch.exception()  # seen: a failed prefetch claimed nothing
        acked, self._acking = list(self._acking), []
        for future, seqs, topic, _batch in self._inflight:
            if not future.done() or future.cancelled():
                continue
            error = future.exception()
            if error is None:
                acked.extend(seqs)
            elif isinstance(error, Refused):  # its PUBACK came with the link's end
                self._refused(topic, error, seqs)
        # Every future of the link is answered by now (its end failed the rest), so the
        # callbacks bring the open counts back to zero on their own.
        self._inflight.clear()
        try:
            if acked:
                await self.outbox.ack(acked)
                self.health.progress("acked", len(acked))
        finally:
            self.outbox.release()
            self.health.set_facts(inflight=0, mode="idle")
