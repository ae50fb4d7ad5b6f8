"""Poller overhead: 50 simulated sensors at 10 Hz through validation into a real outbox.

Baseline, measured in the same run: the same number of samples from the same simulated
driver, inserted one committed row each into a plain SQLite file by a bare loop (no poller,
no validation, no threads, no envelope). Prints readings/s, CPU per reading and the process
CPU share, each beside the baseline as a ratio.

    python bench/bench_sensors.py [--sensors 50] [--hz 10] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.config.outbox import OutboxConfig
from edge_agent.config.sensors import SimulatedSensor
from edge_agent.contract import Kind
from edge_agent.health import HealthRegistry
from edge_agent.outbox import Outbox
from edge_agent.sensors.base import Poller
from edge_agent.sensors.registry import build_driver


def cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


async def run_pollers(
    directory: Path, *, sensors: int, hz: float, seconds: float, store: bool = True
) -> tuple[int, float, float]:
    """Readings committed (or, with `store=False`, only validated and handed to the sink),
    wall seconds and CPU seconds over the measured span."""
    registry = HealthRegistry()
    outbox = Outbox(
        directory / "outbox.sqlite3",
        node="bench",
        config=OutboxConfig(),
        health=registry.register("outbox"),
    )
    committed = 0

    async def sink(kind: Kind, data: dict[str, Any], stream: str, ts: float) -> None:
        nonlocal committed
        if store:
            await outbox.put(kind, data, stream=stream, ts=ts)
        committed += 1

    configs = [
        SimulatedSensor(kind="simulated", name=f"sim-{i}", interval_s=1.0 / hz, seed=i)
        for i in range(sensors)
    ]
    pollers = [
        Poller(c, build_driver(c, state_dir=directory), sink=sink, health=registry.register(c.name))
        for c in configs
    ]
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(outbox)
        for poller in pollers:
            await stack.enter_async_context(poller)
        tasks = [asyncio.create_task(p.run()) for p in pollers]
        await asyncio.sleep(1.0)  # warm-up: threads started, first reads done
        start_n, start_wall, start_cpu = committed, time.monotonic(), cpu_seconds()
        await asyncio.sleep(seconds)
        n, wall, cpu = committed - start_n, time.monotonic() - start_wall, cpu_seconds() - start_cpu
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return n, wall, cpu


def run_baseline(directory: Path, *, count: int, per_read: int) -> tuple[int, float, float]:
    """The same samples, generated and inserted by a bare loop: the floor of the cost."""
    config = SimulatedSensor(kind="simulated", name="base", seed=0)
    driver = build_driver(config, state_dir=directory)
    db = sqlite3.connect(directory / "baseline.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={getattr(OutboxConfig(), 'synchronous', 'NORMAL')}")
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, ts REAL, payload BLOB)")
    n = 0
    start_wall, start_cpu = time.monotonic(), cpu_seconds()
    while n < count:
        ts = time.time()
        for sample in driver.read()[:per_read]:
            payload = json.dumps(
                {
                    "sensor": "base",
                    "quantity": sample.quantity,
                    "value": sample.value,
                    "unit": sample.unit,
                    "quality": "ok",
                }
            ).encode()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO events (ts, payload) VALUES (?, ?)", (ts, payload))
            db.execute("COMMIT")
            n += 1
    wall, cpu = time.monotonic() - start_wall, cpu_seconds() - start_cpu
    db.close()
    return n, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=50, help="simulated sensors")
    parser.add_argument("--hz", type=float, default=10.0, help="reads per second per sensor")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured span")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        # Flags given explicitly still win over the quick sizes.
        parser.set_defaults(seconds=3.0)
        args = parser.parse_args()
    per_read = len(SimulatedSensor(kind="simulated", name="x").quantities)
    offered = args.sensors * args.hz * per_read
    cores = psutil.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        n, wall, cpu = asyncio.run(
            run_pollers(Path(tmp), sensors=args.sensors, hz=args.hz, seconds=args.seconds)
        )
        vn, vwall, vcpu = asyncio.run(
            run_pollers(
                Path(tmp), sensors=args.sensors, hz=args.hz, seconds=args.seconds, store=False
            )
        )
        bn, bwall, bcpu = run_baseline(Path(tmp), count=n, per_read=per_read)
    rate, brate = n / wall, bn / bwall
    per, bper = cpu / n * 1e6, bcpu / bn * 1e6
    print(
        f"{args.sensors} simulated sensors x {args.hz:g} Hz x {per_read} quantities"
        f" = {offered:.0f} readings/s offered; {cores} CPU cores"
    )
    print(
        f"poller -> validation -> outbox : {rate:10.0f} readings/s committed"
        f" ({rate / offered:.2f} of offered)"
    )
    print(
        f"baseline bare loop -> sqlite3  : {brate:10.0f} readings/s (flat out)"
        f"   ratio poller/baseline capacity used: {rate / brate:.2f}"
    )
    print(
        f"poller -> validation, no store: {vn / vwall:10.0f} readings/s"
        f" ({vn / vwall / offered:.2f} of offered), CPU {vcpu / vn * 1e6:.1f} us/reading"
        f" ({vcpu / vn / (bcpu / bn):.1f}x baseline), {vcpu / vwall:.1%} of one core"
    )
    print(
        f"CPU per reading  poller {per:8.1f} us   baseline {bper:8.1f} us   ratio {per / bper:.1f}x"
    )
    print(
        f"agent CPU share while polling: {cpu / wall:.1%} of one core"
        f" ({cpu / wall / cores:.1%} of the machine)"
    )


if __name__ == "__main__":
    main()
