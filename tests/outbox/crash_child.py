"""Child process of the crash test: puts, claims and acks in a loop until it is killed.

It prints `P seq...` only after put() returned, `C seq...` before it acks those rows and
`A seq...` only after ack() returned, so the parent knows which rows may have gone.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from edge_agent.config import OutboxConfig
from edge_agent.contract import Kind
from edge_agent.health import ComponentHealth
from edge_agent.outbox import Outbox

KINDS = [Kind.ALERT, Kind.DETECTION, Kind.READING, Kind.HEALTH]


async def main(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    config = OutboxConfig(commit_window_ms=rng.choice([0.0, 1.0, 3.0]))
    async with Outbox(path, node="crash", config=config, health=ComponentHealth("outbox")) as ob:
        print("E", ob.epoch, flush=True)
        while True:
            puts = [
                ob.put(
                    rng.choice(KINDS),
                    {"n": rng.random(), "pad": "x" * rng.randint(0, 400)},
                    stream="s",
                )
                for _ in range(rng.randint(1, 30))
            ]
            seqs = await asyncio.gather(*puts)
            print("P", *seqs, flush=True)
            rows = await ob.claim(rng.randint(0, 40))
            acks = [r.seq for r in rows if rng.random() < 0.8]
            if acks:
                print("C", *acks, flush=True)
                await ob.ack(acks)
                print("A", *acks, flush=True)
            ob.release([r.seq for r in rows if r.seq not in acks])


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
