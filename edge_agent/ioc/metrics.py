"""The receiver's own Prometheus metrics, and the small server that exposes them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from edge_agent.ioc.intake import Invalid


class ReceiverMetrics:
    """One registry per receiver (not the process-global one), so that several receivers
    in one process, as in the tests, count apart."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages = Counter(
            "ioc_messages",
            "Messages received, by type (data, batch, status).",
            ["type"],
            registry=r,
        )
        self.events = Counter("ioc_events_stored", "Events stored under a new key.", registry=r)
        self.duplicates = Counter(
            "ioc_duplicates", "Events dropped: their (node, epoch, seq) was stored.", registry=r
        )
        self.invalid = Counter(
            "ioc_invalid", "Messages or envelopes refused, by reason.", ["reason"], registry=r
        )
        for reason in Invalid:
            self.invalid.labels(reason.value)
        self.unstorable = Counter(
            "ioc_unstorable",
            "Accepted messages the store refused (a bug: see the log).",
            registry=r,
        )
        self.store_errors = Counter(
            "ioc_store_errors",
            "Failed commits retried (database unreachable, disk full).",
            registry=r,
        )
        self.open_holes = Gauge(
            "ioc_open_holes", "Seq ranges missing past the hole timeout.", registry=r
        )
        self.holes_opened = Counter("ioc_holes_opened", "Holes reported.", registry=r)
        self.holes_closed = Counter(
            "ioc_holes_closed", "Holes closed by late events or a declared gap.", registry=r
        )
        self.lag = Gauge(
            "ioc_lag_seconds",
            "Age of the newest event of the last commit (now minus its observation time).",
            registry=r,
        )
        self.queued = Gauge(
            "ioc_queued_messages", "Received, not yet committed and acknowledged.", registry=r
        )
        self.commit_seconds = Histogram(
            "ioc_commit_seconds",
            "Duration of one group commit.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=r,
        )
        self.connected = Gauge(
            "ioc_broker_connected", "1 while subscribed to the broker.", registry=r
        )

    def value(self, name: str, **labels: str) -> float:
        """One sample by its exposed name, e.g. `value("ioc_invalid_total", reason="schema")`."""
        return float(self.registry.get_sample_value(name, labels) or 0.0)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


@contextlib.asynccontextmanager
async def serving(metrics: ReceiverMetrics, host: str, port: int) -> AsyncIterator[int]:
    """`GET /metrics` on host:port until the block ends; yields the bound port."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield int(runner.addresses[0][1]) if runner.addresses else port
    finally:
        await runner.cleanup()
