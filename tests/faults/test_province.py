"""A whole province reconnecting at once: a hundred nodes' worth of backlog (light nodes
built from the contract's own code, with the agents' token bucket) and two real agents come
back through one path to one broker. Each node's bucket holds it to its rate, so the broker's
inbound rate stays under the sum, and nothing is lost."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import AgentProcess, agent_env
from tests.faults.harness import Node, Receiver, report, scale, settle, wait_until
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(scale(1800, 7200))]

LIGHT = Path(__file__).with_name("light_nodes.py")
BYTES_PER_S = 1_000  # each node's rate_bytes_per_s, messages uncapped


def test_a_whole_province_reconnecting_stays_under_its_rate_and_loses_nothing(
    make_node: Callable[..., Node],
    receiver: Receiver,
    proxy: FaultProxy,
    agent_process: Callable[..., AgentProcess],
) -> None:
    light_count, light_backlog = scale(100, 1000), scale(600, 3000)
    processes = 2 if light_count <= 100 else 8
    mqtt = f"rate_messages_per_s = 0\nrate_bytes_per_s = {BYTES_PER_S}"
    agents = [make_node(f"node-p{i}", sensors=1, interval_s=5.0, mqtt=mqtt) for i in range(2)]
    proxy.cut()
    for agent in agents:
        agent.start()
    wait_until(lambda: all(a.committed() > 12 for a in agents), "the agents' backlogs")
    per_process = light_count // processes
    lights = [
        agent_process(
            command=[
                sys.executable,
                str(LIGHT),
                str(proxy.port),
                str(i * per_process),
                str(per_process),
                str(light_backlog),
                "0",
                str(BYTES_PER_S),
            ],
            env=agent_env(),
        )
        for i in range(processes)
    ]
    limit = (light_count + len(agents)) * BYTES_PER_S
    first_bytes = proxy.counters.bytes_up
    proxy.heal()  # everyone at once
    released = time.monotonic()
    windows: list[float] = []
    last_bytes, last_at = proxy.counters.bytes_up, released

    def light_done() -> bool:
        return sum(p.output.count("done ") for p in lights) == per_process * processes

    while not light_done():
        assert time.monotonic() - released < scale(600, 3600), "the province did not drain"
        time.sleep(1.0)
        now, sent = time.monotonic(), proxy.counters.bytes_up
        windows.append((sent - last_bytes) / (now - last_at))
        last_bytes, last_at = sent, now
    drained_s = time.monotonic() - released
    for agent in agents:
        settle(agent, receiver)
    for i in range(per_process * processes):
        keys = receiver.keys(f"light-{i}")
        assert len(keys) == 1 and set(range(1, light_backlog + 1)) <= next(iter(keys.values()))
    receiver.stop()
    # Each bucket holds its node to its rate with one second of burst, and a node's burst
    # lands whenever it connects: so over the drain the broker takes at most the sum of the
    # rates, and in any one second at most that plus every node's burst (MQTT framing adds
    # a few percent to the payload bytes the buckets count).
    peak = max(windows)
    mean = (proxy.counters.bytes_up - first_bytes) / max(drained_s, 1e-6)
    assert mean <= 1.1 * limit, (mean, limit)
    assert peak <= 2.2 * limit, (peak, limit)
    report(
        "province-reconnect",
        light_nodes=per_process * processes,
        agents=len(agents),
        committed=per_process * processes * light_backlog
        + sum(int(agent.stats()["last_seq"]) for agent in agents),
        missing=0,
        limit_bytes_per_s=limit,
        peak_bytes_per_s=round(peak),
        mean_bytes_per_s=round(mean),
        first_window_bytes_per_s=round(windows[0]) if windows else None,
        drained_s=round(drained_s, 1),
    )
