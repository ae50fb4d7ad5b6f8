"""Child process of the lost-WAL-tail test: commits events one round at a time, under the
given outbox settings, until it is killed.

It prints `E epoch` once, then `P seq...` only after those puts returned (committed), so the
parent knows every (epoch, seq) key the outbox promised and what it carried.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from edge_agent.config import OutboxConfig
from edge_agent.contract import Kind
from edge_agent.health import ComponentHealth
from edge_agent.outbox import Outbox


async def main(path: Path, settings: dict[str, object], rounds: int) -> None:
    config = OutboxConfig.model_validate(settings)
    async with Outbox(path, node="wal", config=config, health=ComponentHealth("outbox")) as ob:
        print("E", ob.epoch, flush=True)
        for n in range(rounds):
            seqs = await asyncio.gather(
                ob.put(Kind.DETECTION, {"round": n, "i": 0, "run": "first"}, stream="cam"),
                ob.put(Kind.ALERT, {"alert": "x", "severity": "info", "round": n}, stream="alert"),
                ob.put(Kind.DETECTION, {"round": n, "i": 1, "run": "first"}, stream="cam"),
            )
            print("P", *seqs, flush=True)
        print("DONE", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])))
