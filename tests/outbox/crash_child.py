"""Child process of the crash test: puts, claims and acks in a loop until it is killed, with
commit windows, ack windows and packing drawn at random (the defaults among them).

It prints `P seq...` only after put() returned, `C seq...` before it acks those events and
`A seq...` only after ack() returned, so the parent knows which events may have gone. Acks
run beside the puts, as the publisher's acker does.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

from edge_agent.config import OutboxConfig
from edge_agent.contract import Kind
from edge_agent.health import ComponentHealth
from edge_agent.outbox import Outbox

KINDS = [Kind.ALERT, Kind.DETECTION, Kind.READING, Kind.HEALTH]


async def main(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    config = OutboxConfig(
        commit_window_ms=rng.choice([0.0, 2.0]),
        commit_window_reading_ms=rng.choice([0.0, 50.0, 100.0]),
        commit_window_health_ms=rng.choice([0.0, 100.0]),
        ack_window_ms=rng.choice([0.0, 100.0, 1000.0]),
        row_max_events=rng.choice([1, 8, 64]),
        synchronous=rng.choice(["FULL", "NORMAL"]),
    )
    acks: set[asyncio.Task[None]] = set()

    async def ack(ob: Outbox, seqs: list[int]) -> None:
        print("C", *seqs, flush=True)
        await ob.ack(seqs)
        print("A", *seqs, flush=True)

    async with Outbox(path, node="crash", config=config, health=ComponentHealth("outbox")) as ob:
        print("E", ob.epoch, flush=True)
        while True:
            ts = time.time()
            read = [
                (Kind.READING, {"q": q, "n": rng.random()}, "modbus", ts, None)
                for q in range(rng.randint(1, 20))
            ]
            puts = [
                ob.put(
                    rng.choice(KINDS),
                    {"n": rng.random(), "pad": "x" * rng.randint(0, 400)},
                    stream="s",
                )
                for _ in range(rng.randint(0, 10))
            ]
            results = await asyncio.gather(ob.put_many(read), *puts)
            print("P", *results[0], *results[1:], flush=True)
            rows = await ob.claim(rng.randint(0, 40))
            chosen = [r.seq for r in rows if rng.random() < 0.8]
            if chosen:
                task = asyncio.create_task(ack(ob, chosen))
                acks.add(task)
                task.add_done_callback(acks.discard)
            ob.release([r.seq for r in rows if r.seq not in chosen])


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
