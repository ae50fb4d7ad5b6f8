"""Many light nodes in one process, built from the contract's own code: each holds a backlog
of readings, connects through the given port (retrying with the agents' `Backoff` until the
link is there) and sends its backlog as zstd batches behind its own `TokenBucket` with the
agents' rate settings, then prints `done NODE`. A province's worth of nodes that come back
at once.

    python tests/faults/light_nodes.py PORT FIRST COUNT BACKLOG MESSAGES_PER_S BYTES_PER_S
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time

from edge_agent.backoff import Backoff
from edge_agent.contract import Envelope, Topics, encode_batch, reading_data
from edge_agent.errors import SyncError
from edge_agent.sync.link import Link
from edge_agent.sync.publisher import TokenBucket
from edge_agent.sync.values import LinkOptions

BATCH = 100
WINDOW = 4


def backlog(node: str, count: int) -> list[bytes]:
    epoch = secrets.token_hex(8)
    start = time.time() - count
    return [
        Envelope(
            node,
            epoch,
            seq,
            start + seq,
            "reading",
            reading_data(sensor="light", quantity="pm2_5", value=float(seq % 300), unit="ug/m3"),
        ).encode()
        for seq in range(1, count + 1)
    ]


async def one_node(port: int, node: str, count: int, rate: tuple[float, float]) -> None:
    topics = Topics("ioc/v1", "faults", node)
    envelopes = backlog(node, count)
    bucket = TokenBucket(*rate)
    retry = Backoff(0.2, 2.0)
    sent = 0
    while sent < len(envelopes):
        try:
            options = LinkOptions("127.0.0.1", port, client_id=f"edge-{node}", keepalive_s=10)
            async with Link(options) as link:
                retry.reset()
                while sent < len(envelopes):
                    group = []
                    for _ in range(WINDOW):
                        chunk = envelopes[sent + len(group) * BATCH :][:BATCH]
                        if not chunk:
                            break
                        payload = encode_batch(chunk, compress=True)
                        await bucket.take(1, len(payload))
                        group.append((len(chunk), link.publish(topics.batch, payload)))
                    for size, acked in group:
                        await acked
                        sent += size
        except (SyncError, OSError):
            await asyncio.sleep(retry.next())
    print(f"done {node}", flush=True)


async def main() -> None:
    port, first, count, size = (int(a) for a in sys.argv[1:5])
    rate = (float(sys.argv[5]), float(sys.argv[6]))
    await asyncio.gather(
        *(one_node(port, f"light-{i}", size, rate) for i in range(first, first + count))
    )


if __name__ == "__main__":
    asyncio.run(main())
