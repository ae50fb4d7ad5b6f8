"""Shared fixtures: a private mosquitto broker on a free loopback port, and the agent's env."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str, *, package: str) -> str:
    """The path of a program the tests need; in CI a missing one fails instead of skipping."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        message = f"{name} not found: install the Debian package {package} (scripts/setup does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_for_port(
    port: int, *, timeout_s: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Terminate a helper process (kill it after 10 s) and close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@dataclass
class Broker:
    """A private mosquitto: `restart()` keeps the port; `stop()`/`start()` simulate an outage."""

    binary: str
    directory: Path
    port: int
    extra_config: str = ""
    persistence: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.directory}/",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"log_dest file {self.directory}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            self.extra_config,
        ]
        if os.geteuid() == 0 and "user root" not in self.extra_config:
            # As root mosquitto drops to its own user, which cannot write into pytest's tmp
            # dirs: persistence and the log would fail silently.
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.write_config()
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port, process=self.process)
        except RuntimeError:
            assert self.process.stderr is not None
            raise RuntimeError(f"mosquitto failed: {self.process.stderr.read().decode()}") from None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto on a free loopback port, stopped after the test."""
    binary = require_binary("mosquitto", package="mosquitto")
    directory = tmp_path / "broker"
    directory.mkdir()
    instance = Broker(binary=binary, directory=directory, port=free_port())
    instance.start()
    yield instance
    instance.stop()


def agent_env(*, mqtt: bool = False, **extra: str) -> dict[str, str]:
    """Environment for an agent subprocess: this checkout first on the path, no stray config,
    and no broker link unless the test brings its own broker (`mqtt=True`, with host and port
    in the test's config), so no agent reaches a broker on the default port. A test that runs
    the status page sets its port (0 or one it chose) in its config or `EDGE_AGENT_WEB__PORT`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    if not mqtt:
        env["EDGE_AGENT_MQTT__ENABLED"] = "false"
    env.update(extra)
    return env


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_agent", *args]
