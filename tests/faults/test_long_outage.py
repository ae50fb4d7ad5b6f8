"""A long outage: a big backlog (20,000 events in CI, 1,000,000 in bench/faults) waits
behind a cut link, then the link returns. Everything arrives, memory stays bounded from start
to end, and the status page and the sensors keep answering while the backlog drains."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import agent_env
from tests.faults.harness import Node, Receiver, report, scale, settle, wait_until
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(7200)]

FILL = Path(__file__).with_name("fill_outbox.py")
MIB = 1024 * 1024


def page_latency(node: Node) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{node.web_port}/api/status", timeout=60) as r:
        r.read()
    return time.perf_counter() - started


def test_a_long_outage_drains_in_bounded_memory_with_the_page_responsive(
    make_node: Callable[..., Node], receiver: Receiver, proxy: FaultProxy
) -> None:
    backlog = scale(20_000, 1_000_000)
    node = make_node()
    subprocess.run(
        [sys.executable, str(FILL), str(node.state_dir), node.name, str(backlog)],
        env=agent_env(),
        check=True,
        timeout=3600,
    )
    proxy.cut()
    node.start()
    wait_until(lambda: node.committed() > backlog, "the sensors committing over the backlog")
    rss_start = node.rss()
    committed_before = node.committed()
    latencies: list[float] = []
    rss_peak = rss_start
    healed = time.monotonic()
    proxy.heal()

    # In order within its priority: the backlog (all readings) must arrive oldest first, so
    # whenever the receiver is looked at, what it stored of the backlog is 1..k, no hole.
    out_of_order = 0
    samples = 0

    def backlog_stored() -> bool:
        nonlocal out_of_order, samples
        epoch = str(node.stats().get("epoch"))
        stored = [s for s in receiver.keys(node.name).get(epoch, set()) if s <= backlog]
        samples += 1
        if stored:
            out_of_order = max(out_of_order, max(stored) - len(stored))
        return len(stored) == backlog

    while not backlog_stored():
        latencies.append(page_latency(node))
        rss_peak = max(rss_peak, node.rss())
        assert time.monotonic() - healed < scale(600, 6000), "backlog not drained in time"
        time.sleep(0.5)
    drain_s = time.monotonic() - healed
    sensors_during_drain = node.committed() - committed_before
    assert out_of_order == 0, f"up to {out_of_order} backlog seqs stored ahead of older ones"
    acc = settle(node, receiver)
    receiver.stop()
    # The backlog is streamed in bounded batches, never loaded: memory stays flat.
    assert rss_peak - rss_start < 30 * MIB, (rss_start / MIB, rss_peak / MIB)
    # The sensors kept reading and committing while the backlog went out.
    assert sensors_during_drain > 0
    report(
        "long-outage",
        backlog=backlog,
        committed=acc.sent,
        stored=acc.stored,
        missing=0,
        drain_s=round(drain_s, 1),
        out_of_order=out_of_order,
        order_samples=samples,
        drain_events_per_s=round(backlog / max(drain_s, 1e-6)),
        rss_start_mib=round(rss_start / MIB, 1),
        rss_peak_mib=round(rss_peak / MIB, 1),
        page_latency_p50_ms=round(1000 * statistics.median(latencies), 1) if latencies else None,
        page_latency_max_ms=round(1000 * max(latencies), 1) if latencies else None,
        sensor_events_during_drain=sensors_during_drain,
    )
