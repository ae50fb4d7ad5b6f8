"""Outbox → broker: a sliding window of QoS 1 publishes, rows deleted only on PUBACK.

Live events go out one per message as soon as they are committed; when a claim returns a
backlog, the rows go out as one batch message (optionally zstd), behind a token bucket.
A sliding window, not "send a batch then wait for all acks": the latter stalls on Nagle's
algorithm at brokers without `set_tcp_nodelay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from edge_agent.contract import (
    BATCH_CONTENT_TYPE,
    BATCH_ZSTD_CONTENT_TYPE,
    Topics,
    encode_batch,
)
from edge_agent.errors import SyncError
from edge_agent.health import ComponentHealth
from edge_agent.sync.link import Link

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


class Publisher:
    """Drains the outbox over one link at a time; `drain()` returns when the link dies."""

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
    ) -> None:
        self.outbox = outbox
        self.topics = topics
        self.health = health
        self.window = window
        self.batch_max = batch_max
        self.batch_min = batch_min
        self.batch_window = batch_window
        self._batches_inflight = 0
        self.compress = compress
        self.rate = rate or TokenBucket(0, 0)
        self._inflight: dict[int, Sequence[int]] = {}
        self._to_ack: list[int] = []
        self._rejected: list[int] = []
        self._prefetch: asyncio.Future[Sequence[Row]] | None = None
        self._space = asyncio.Event()
        self._acks_ready = asyncio.Event()
        self.stats = {"messages": 0, "batches": 0, "events": 0, "bytes": 0}

    def on_ack(self, mid: int, ok: bool) -> None:
        """PUBACK for `mid` (called by the link on the loop thread)."""
        seqs = self._inflight.pop(mid, None)
        if seqs is None:
            return
        if len(seqs) > 1:
            self._batches_inflight -= 1
        if ok:
            self._to_ack.extend(seqs)
            self._acks_ready.set()
        else:
            self._rejected.extend(seqs)
        self._space.set()

    async def _acker(self) -> None:
        while True:
            await self._acks_ready.wait()
            self._acks_ready.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        if not self._to_ack:
            return
        seqs, self._to_ack = self._to_ack, []
        await self.outbox.ack(seqs)
        self.health.progress("acked", len(seqs))

    async def drain(self, link: Link) -> None:
        buffer: deque[Row] = deque()
        # This publisher is the only claimer: rows a previous link left claimed are free.
        self.outbox.release()
        acker = asyncio.create_task(self._acker(), name="sync-acker")
        try:
            while not link.closed.done():
                self.health.beat(5.0)
                if acker.done():
                    acker.result()  # an outbox failure is fatal: surface it
                if self._rejected:
                    await self._handle_rejected()
                if len(self._inflight) >= self.window or (
                    self._batches_inflight >= self.batch_window
                ):
                    self._space.clear()
                    await _wait_any(self._space.wait(), link.closed, timeout=1.0)
                    continue
                if not buffer:
                    rows = await self._claim()
                    if not rows:
                        self.health.set_facts(inflight=len(self._inflight), mode="live")
                        await _wait_any(
                            self.outbox.wait_for_rows(timeout=1.0), link.closed, timeout=1.5
                        )
                        continue
                    if self.batch_max > 1 and len(rows) >= self.batch_min:
                        await self._send_batch(link, rows)
                        continue
                    buffer.extend(rows)
                row = buffer.popleft()
                await self.rate.take(1, len(row.payload))
                # No content-type property on single envelopes: the topic says what it is,
                # and packing MQTT 5 properties per message costs a fifth of the drain rate.
                mid = link.publish(self.topics.data(row.stream), row.payload)
                self._inflight[mid] = (row.seq,)
                self.stats["messages"] += 1
                self.stats["events"] += 1
                self.stats["bytes"] += len(row.payload)
        except SyncError as exc:
            if not link.closed.done():
                raise
            log.debug("publish stopped: %s", exc)
        finally:
            prefetch, self._prefetch = self._prefetch, None
            if prefetch is not None:
                # Never cancel a claim: its thread would still mark rows as claimed after
                # the release below. Wait for it instead (it is one short query).
                with contextlib.suppress(Exception):
                    await asyncio.shield(prefetch)
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acker
            # Rows acked by the broker are deleted; everything else goes back to the outbox.
            try:
                await self._flush_acks()
            finally:
                self._inflight.clear()
                self._batches_inflight = 0
                self._rejected.clear()
                self.outbox.release()
                self.health.set_facts(inflight=0)

    async def _claim(self) -> Sequence[Row]:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            rows = await prefetch
            if rows:
                return rows
        return await self.outbox.claim(self._claim_size())

    def _claim_size(self) -> int:
        if self.batch_max > 1:
            return self.batch_max
        return max(2 * self.window, 64)

    async def _send_batch(self, link: Link, rows: Sequence[Row]) -> None:
        payload = encode_batch([r.payload for r in rows], compress=self.compress)
        await self.rate.take(1, len(payload))
        mid = link.publish(
            self.topics.batch,
            payload,
            content_type=BATCH_ZSTD_CONTENT_TYPE if self.compress else BATCH_CONTENT_TYPE,
        )
        self._inflight[mid] = tuple(r.seq for r in rows)
        self._batches_inflight += 1
        if self._prefetch is None:
            # Backlog: fetch the next batch while this one is on the wire.
            self._prefetch = asyncio.ensure_future(self.outbox.claim(self._claim_size()))
        self.stats["messages"] += 1
        self.stats["batches"] += 1
        self.stats["events"] += len(rows)
        self.stats["bytes"] += len(payload)
        self.health.set_facts(inflight=len(self._inflight), mode="backlog")

    async def _handle_rejected(self) -> None:
        seqs, self._rejected = self._rejected, []
        self.outbox.release(seqs)
        self.health.count("rejected_by_broker", len(seqs))
        log.warning("broker rejected %d events; they stay in the outbox and are retried", len(seqs))
        await asyncio.sleep(5.0)


async def _wait_any(awaitable: Any, closed: asyncio.Future[str], *, timeout: float) -> None:
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait([task, closed], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
