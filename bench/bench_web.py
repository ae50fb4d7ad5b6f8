"""The status page's cost: the agent's CPU while 10 phones poll the page's data and a
scraper reads /metrics, every 2 s, as a share of the agent's total; and the page's weight.

The agent runs as a process on its embedded default (with the sample clip and the model if
they are there, so the demo camera runs as it would). Baseline, measured in the same run:
the same agent with no client. Rounds alternate idle and polled spans so that other load on
the machine falls on both; the figures are the medians. Page weight: the first load (page,
style, script, icon, one catalogue, one /api/status) raw and gzipped, beside the 60 KB
budget.

    python bench/bench_web.py [--clients 10] [--period 2] [--seconds 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

REPO = Path(__file__).resolve().parent.parent
FIRST_LOAD = ["/", "/static/style.css", "/static/app.js", "/static/icon.svg", "/i18n/vi.json"]
BUDGET_BYTES = 60_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_agent(directory: Path, port: int, *, camera: bool) -> subprocess.Popen[bytes]:
    if camera:
        for name in ("media", "models"):
            if (REPO / name).is_dir():
                (directory / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env.update(
        PYTHONPATH=str(REPO), EDGE_AGENT_MQTT__ENABLED="false", EDGE_AGENT_WEB__PORT=str(port)
    )
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run"],
        cwd=directory,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_until_up(base: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(base + "/healthz") as response:
                    await response.read()
                    return
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def phone(base: str, period_s: float, stop: asyncio.Event, counts: list[int]) -> None:
    """One client: the first load once, then /api/status and /metrics every period."""
    headers = {"Accept-Encoding": "gzip"}
    async with aiohttp.ClientSession() as session:
        for path in FIRST_LOAD:
            async with session.get(base + path, headers=headers) as response:
                await response.read()
        while not stop.is_set():
            started = time.monotonic()
            for path in ("/api/status", "/metrics"):
                async with session.get(base + path, headers=headers) as response:
                    await response.read()
                counts[0] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), max(0.0, period_s - (time.monotonic() - started))
                )


async def span(process: psutil.Process, seconds: float) -> float:
    """CPU seconds of the agent per wall second over one span."""
    wall0, cpu0 = time.monotonic(), cpu_seconds(process)
    await asyncio.sleep(seconds)
    return (cpu_seconds(process) - cpu0) / (time.monotonic() - wall0)


async def measure(
    base: str, pid: int, *, clients: int, period_s: float, seconds: float, rounds: int
) -> dict[str, float]:
    process = psutil.Process(pid)
    idle: list[float] = []
    polled: list[float] = []
    requests = 0
    for _ in range(rounds):
        idle.append(await span(process, seconds))
        stop = asyncio.Event()
        counts = [0]
        tasks = [asyncio.create_task(phone(base, period_s, stop, counts)) for _ in range(clients)]
        await asyncio.sleep(period_s)  # every phone has loaded the page once
        counts[0] = 0
        polled.append(await span(process, seconds))
        requests += counts[0]
        stop.set()
        await asyncio.gather(*tasks)
    return {
        "idle": statistics.median(idle),
        "polled": statistics.median(polled),
        "requests_per_s": requests / (rounds * seconds),
    }


async def page_weight(base: str) -> tuple[int, int]:
    raw = packed = 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for path in [*FIRST_LOAD, "/api/status"]:
            async with session.get(base + path, headers={"Accept-Encoding": "identity"}) as r:
                raw += len(await r.read())
            async with session.get(base + path, headers={"Accept-Encoding": "gzip"}) as response:
                packed += len(await response.read())
    return raw, packed


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--period", type=float, default=2.0, help="seconds between polls")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each span")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-camera", action="store_true", help="the default without the demo camera"
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 8.0, 1
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        agent = start_agent(Path(tmp), port, camera=not args.no_camera)
        try:
            await wait_until_up(base)
            await asyncio.sleep(5.0)  # start-up settles: model loaded, first reads done
            figures = await measure(
                base,
                agent.pid,
                clients=args.clients,
                period_s=args.period,
                seconds=args.seconds,
                rounds=args.rounds,
            )
            raw, packed = await page_weight(base)
        finally:
            agent.terminate()
            agent.wait(timeout=20)
    idle, polled = figures["idle"], figures["polled"]
    cost = max(0.0, polled - idle)
    per_request_ms = 1000 * cost / figures["requests_per_s"] if figures["requests_per_s"] else 0.0
    camera = "without" if args.no_camera else "with"
    print(
        f"agent on its embedded default ({camera} the demo camera), {args.clients} clients"
        f" polling /api/status and /metrics every {args.period:g} s,"
        f" {args.rounds} x {args.seconds:g} s"
    )
    print(f"  agent CPU, no client (baseline)   {idle * 100:6.1f} % of a core")
    print(
        f"  agent CPU, polled                 {polled * 100:6.1f} % of a core"
        f"   ratio {polled / idle if idle else float('nan'):.2f}"
    )
    print(
        f"  serving the page                  {cost * 100:6.1f} % of a core"
        f"   share of the agent's total {cost / polled if polled else 0:.1%}"
    )
    print(
        f"  requests                          {figures['requests_per_s']:6.1f} /s"
        f"   {per_request_ms:.2f} ms CPU each"
    )
    print(f"  first load, raw                   {raw:6d} bytes")
    print(
        f"  first load, gzip                  {packed:6d} bytes   ratio to the"
        f" {BUDGET_BYTES // 1000} KB budget {packed / BUDGET_BYTES:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
