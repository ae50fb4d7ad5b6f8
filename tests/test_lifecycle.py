"""`edge-agent run` as a real process: embedded default, SIGTERM, reverse close, sd_notify."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import agent_command, agent_env


def start_agent(cwd: Path, **env: str) -> subprocess.Popen[str]:
    # Port 0 keeps parallel runs apart; everything else is the embedded default.
    return subprocess.Popen(
        agent_command("run"),
        cwd=cwd,
        env=agent_env(EDGE_AGENT_WEB__PORT="0", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(process: subprocess.Popen[str], pattern: str, timeout_s: float = 30) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r}; got:\n{''.join(lines)}")


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(30)
    yield sock
    sock.close()


def test_sigterm_stops_cleanly_in_reverse_order(tmp_path: Path) -> None:
    agent = start_agent(tmp_path)
    try:
        started = read_until(agent, r"running as node")
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=10)
    finally:
        agent.kill()
    assert agent.returncode == 0, output
    opened = [m.group(1) for line in started if (m := re.search(r"started (\S+)$", line))]
    closed = [
        m.group(1) for line in output.splitlines() if (m := re.search(r"closed (\S+)$", line))
    ]
    assert opened[0] == "outbox"
    assert {"sensor:sim-1", "sensor:host", "web"} <= set(opened)
    assert closed == list(reversed(opened))
    assert (tmp_path / "var" / "outbox.sqlite3").exists()


def test_sigint_also_stops_cleanly(tmp_path: Path) -> None:
    agent = start_agent(tmp_path)
    try:
        read_until(agent, r"running as node")
        agent.send_signal(signal.SIGINT)
        output, _ = agent.communicate(timeout=10)
    finally:
        agent.kill()
    assert agent.returncode == 0, output
    assert "closed outbox" in output


def test_notify_ready_then_stopping(tmp_path: Path, notify_socket: socket.socket) -> None:
    agent = start_agent(tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
    try:
        first = notify_socket.recv(4096).decode()
        assert first.startswith("READY=1")
        agent.send_signal(signal.SIGTERM)
        messages = [notify_socket.recv(4096).decode()]
        agent.communicate(timeout=10)
    finally:
        agent.kill()
    assert messages[0] == "STOPPING=1"
    assert agent.returncode == 0


def test_watchdog_is_fed_while_components_progress(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    agent = start_agent(
        tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="400000"
    )
    try:
        received = [notify_socket.recv(4096).decode() for _ in range(4)]
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=10)
    finally:
        agent.kill()
    assert received[0].startswith("READY=1") or "WATCHDOG=1" in received
    assert received.count("WATCHDOG=1") >= 2
