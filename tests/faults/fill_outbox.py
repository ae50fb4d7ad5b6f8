"""Fill a node's outbox with N readings as fast as the outbox takes them: a long outage's
backlog built at an accelerated rate (run before the agent starts on the same state dir).

    python tests/faults/fill_outbox.py STATE_DIR NODE COUNT
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from edge_agent.config import OutboxConfig
from edge_agent.contract import Kind, reading_data
from edge_agent.health import ComponentHealth
from edge_agent.outbox import Outbox

BATCH = 1000


async def fill(state_dir: Path, node: str, count: int) -> None:
    outbox = Outbox(
        state_dir / "outbox.sqlite3",
        node=node,
        config=OutboxConfig(synchronous="NORMAL"),
        health=ComponentHealth("outbox"),
    )
    start = time.time() - count / 100.0  # as if taken at 100 readings/s over the outage
    async with outbox:
        done = 0
        while done < count:
            n = min(BATCH, count - done)
            events = [
                (
                    Kind.READING,
                    reading_data(
                        sensor="backlog",
                        quantity="pm2_5",
                        value=float((done + i) % 500) / 10,
                        unit="ug/m3",
                    ),
                    "backlog",
                    start + (done + i) / 100.0,
                    None,
                )
                for i in range(n)
            ]
            await outbox.put_many(events)
            done += n


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(fill(target, sys.argv[2], int(sys.argv[3])))
