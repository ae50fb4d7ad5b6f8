"""The status server under abuse (issue 9.4): 1,000 half-open connections held against an
agent with a small fd limit must not stop /healthz from answering, nor the MQTT link from
reconnecting after a broker restart, nor flood the log with accept() tracebacks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from edge_agent.contract import Envelope
from edge_agent.sync.link import Link, Message
from tests.conftest import Broker, agent_command, agent_env, free_port, stop_process, wait_for_port
from tests.sync.conftest import DISTRICT, NODE, PREFIX, client_options, eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

BASE = f"{PREFIX}/{DISTRICT}/{NODE}"
FD_LIMIT = 512
HALF_OPEN = 1000


def write_config(tmp_path: Path, broker: Broker, web_port: int) -> Path:
    path = tmp_path / "edge-agent.toml"
    path.write_text(
        f"""
cameras = []
[node]
id = "{NODE}"
district = "{DISTRICT}"
[paths]
state_dir = "{tmp_path / "state"}"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
keepalive_s = 5
backoff_min_s = 0.2
backoff_max_s = 1.0
[[sensors]]
kind = "simulated"
name = "sim-1"
interval_s = 0.5
quantities = ["temperature"]
[web]
port = {web_port}
"""
    )
    return path


def start_with_fd_limit(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """The agent under a small fd limit, as a small node's unit might set: it must keep
    descriptors for itself whatever clients do."""
    command = [*agent_command(), "run", "--config", str(config)]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            ["/bin/sh", "-c", f'ulimit -n {FD_LIMIT} && exec "$@"', "sh", *command],
            env=agent_env(mqtt=True),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@pytest.fixture
def half_open() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def open_half_requests(port: int, count: int, held: list[socket.socket]) -> None:
    """`count` connections that each send half a request header and then wait (a connect
    that times out means the server stopped accepting: its backlog is full)."""
    for _ in range(count):
        sock = socket.socket()
        held.append(sock)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")


async def test_half_open_connections_leave_healthz_and_the_link_alive(
    broker: Broker, tmp_path: Path, half_open: list[socket.socket]
) -> None:
    web_port = free_port()
    config = write_config(tmp_path, broker, web_port)
    log_path = tmp_path / "agent.log"
    messages: list[Message] = []
    listening = contextlib.AsyncExitStack()
    listener = await listening.enter_async_context(
        Link(client_options(broker, "watch"), on_message=messages.append)
    )
    await listener.subscribe(f"{BASE}/data/#")
    agent = start_with_fd_limit(config, log_path)
    try:
        await asyncio.to_thread(wait_for_port, web_port, timeout_s=30, process=agent)
        await eventually(lambda: bool(messages), timeout_s=30)

        await asyncio.to_thread(open_half_requests, web_port, HALF_OPEN, half_open)

        # A field technician's check still gets an answer while the 1,000 are held.
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://127.0.0.1:{web_port}/healthz") as response,
        ):
            assert response.status in (200, 503)
            body = await response.json()
            assert body["verdict"] in ("ok", "degraded", "failing")

        # The link survives a broker restart: fresh readings arrive through the new broker.
        await listening.aclose()
        broker.restart()
        after: list[Message] = []
        async with Link(client_options(broker, "watch-2"), on_message=after.append) as again:
            await again.subscribe(f"{BASE}/data/#")
            await eventually(lambda: len(after) >= 3, timeout_s=60)
        assert {Envelope.decode(m.payload).node for m in after} == {NODE}
        assert agent.poll() is None, "the agent exited under the flood"
    finally:
        await listening.aclose()
        for sock in half_open:
            sock.close()
        stop_process(agent)
    log_text = log_path.read_text(errors="replace")
    accept_errors = log_text.count("socket.accept() out of system resource")
    # The cap keeps the agent below its fd limit: accept() never fails at all.
    assert accept_errors == 0, f"{accept_errors} accept() errors logged"
    assert log_text.count("Traceback") == 0, log_text[-4000:]
    # What the server did about the flood is said, and said once in a while, not per socket.
    shed = [line for line in log_text.splitlines() if "status page:" in line]
    assert 0 < len(shed) < 20, shed
