"""What the derived streams add to a reading's path, and what closing an hour costs.

Every committed reading is offered to the `derive` (VN_AQI, limits) and `station_export`
components. Baseline, measured in the same run: the CPU the outbox spends to commit one
reading when, as the pollers do, many are put at once (group commit into a real file).
Prints CPU per reading of each `offer()`, beside that baseline, as a ratio; and the time to
close one hour (hourly means, VN_AQI, every QCVN limit) for a node of many sensors.

    python bench/bench_derive.py [--readings 200000] [--sensors 20] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.config.environment import AqiConfig, LimitsConfig, StationExportConfig
from edge_agent.config.outbox import OutboxConfig
from edge_agent.contract import Kind, reading_data
from edge_agent.derive.component import DerivedStreams
from edge_agent.export.component import StationExport
from edge_agent.health import ComponentHealth
from edge_agent.outbox import Outbox

HOUR = 3600
T0 = 1_795_712_400  # 2026-11-27 00:00 in Vietnam


def cpu_seconds() -> float:
    # this process's CPU, all threads (the outbox's writer thread included), fine-grained
    return time.process_time()


def readings(n: int, sensors: int) -> list[tuple[dict[str, Any], float]]:
    quantities = ("pm2_5", "pm10", "o3", "no2", "temperature", "cod")
    out = []
    for i in range(n):
        quantity = quantities[i % len(quantities)]
        data = reading_data(
            sensor=f"aq-{i % sensors}", quantity=quantity, value=20.0 + i % 50, unit="ug/m3"
        )
        out.append((data, float(T0 + (i * 7) % HOUR)))
    return out


async def outbox_cpu_per_reading(
    directory: Path, items: list[tuple[dict[str, Any], float]]
) -> float:
    outbox = Outbox(
        directory / "outbox.sqlite3",
        node="bench",
        config=OutboxConfig(),
        health=ComponentHealth("outbox"),
    )
    async with outbox:
        task = asyncio.create_task(outbox.run())
        start = cpu_seconds()
        for i in range(0, len(items), 100):
            await asyncio.gather(
                *(
                    outbox.put(Kind.READING, d, stream=d["sensor"], ts=ts)
                    for d, ts in items[i : i + 100]
                )
            )
        cpu = cpu_seconds() - start
        task.cancel()
    return cpu / len(items)


async def noop_sink(kind: Kind, data: dict[str, Any], stream: str, ts: float) -> None:
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--sensors", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.readings
    items = readings(n, args.sensors)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        baseline = await outbox_cpu_per_reading(base, items[: min(n, 20_000)])
        derive = DerivedStreams(
            AqiConfig(enabled=True),
            LimitsConfig(
                enabled=True,
                rules=[{"quantity": "cod", "period": "1h", "limit": 75, "unit": "ug/m3"}],
            ),
            state_dir=base,
            sink=noop_sink,
            health=ComponentHealth("derive"),
            clock=lambda: float(T0),
        )
        export = StationExport(
            StationExportConfig(
                enabled=True,
                province="HN",
                facility="F",
                host="127.0.0.1",
                stations=[
                    {"code": "S1", "parameters": [{"quantity": "cod"}, {"quantity": "pm2_5"}]}
                ],
            ),
            state_dir=base,
            sink=noop_sink,
            health=ComponentHealth("station_export"),
            clock=lambda: float(T0),
        )
        async with derive, export:
            derive.hours.last_closed = T0 - HOUR
            figures = {}
            for name, offer in (
                ("derive.offer", derive.offer),
                ("station_export.offer", export.offer),
            ):
                start = cpu_seconds()
                for data, ts in items:
                    offer(Kind.READING, data, data["sensor"], ts)
                figures[name] = (cpu_seconds() - start) / n
            # a day of history, then closing hours one by one
            for hour in range(1, 25):
                for data, ts in items[: 6 * args.sensors]:
                    derive.offer(Kind.READING, data, data["sensor"], ts + hour * HOUR)
                started = time.perf_counter()
                await derive._close(T0 + hour * HOUR)  # the step being measured
                close_s = time.perf_counter() - started
    print(f"readings offered: {n}, sensors: {args.sensors}")
    print(f"baseline: outbox commit CPU per reading    {baseline * 1e6:8.2f} us")
    for name, value in figures.items():
        print(f"{name:<22} CPU per reading  {value * 1e6:8.2f} us   ratio {value / baseline:6.3f}")
    print(
        f"closing a day's last hour ({args.sensors} sensors; hourly and daily VN_AQI,"
        f" 13 limits, state saved): {close_s * 1e3:.2f} ms wall, once an hour"
    )


if __name__ == "__main__":
    asyncio.run(main())
