"""Shared fixtures: a private mosquitto broker on a free loopback port, and the agent's env."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
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


class AgentProcess:
    """A child process whose output is read while it runs (a full pipe never blocks it) and
    whose pipes are always closed: use as a context manager or through `agent_process`."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path | None = None) -> None:
        self.args = args
        self.process = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="agent-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for_output(self, pattern: str, *, timeout_s: float = 60.0) -> re.Match[str]:
        """The first match of `pattern` (a regex) in the output, waiting for it to appear."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = regex.search("".join(self._lines))
                if found is not None:
                    return found
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"process exited with {self.process.returncode} before printing"
                        f" {pattern!r}:\n{''.join(self._lines)}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {pattern!r} within {timeout_s} s:\n{''.join(self._lines)}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def send_signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        return code

    def stop(self, sig: int = signal.SIGTERM, *, timeout_s: float = 20.0) -> int:
        """Signal it (SIGKILL after `timeout_s`), wait, and close its pipes."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(sig)
                try:
                    self.process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self._reader.join(timeout=5)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def agent_process() -> Iterator[Callable[..., AgentProcess]]:
    """Start `edge-agent ARGS...` (or any command with `command=`) as a child; every one is
    stopped and its pipes closed after the test, whatever happened."""
    started: list[AgentProcess] = []

    def start(
        *args: str,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> AgentProcess:
        child = AgentProcess(
            command or agent_command(*args), env=env if env is not None else agent_env(), cwd=cwd
        )
        started.append(child)
        return child

    yield start
    for child in reversed(started):
        child.stop(timeout_s=10)


DYNSEC = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


def refusing_broker(broker: Broker, *denied: tuple[str, str]) -> None:
    """Restart `broker` with mosquitto's dynamic-security plugin denying `(acltype, topic)`
    to anonymous clients. (Its acl_file only filters deliveries and grants every SUBACK.)"""
    if not DYNSEC.exists():
        pytest.fail(f"{DYNSEC} missing: it ships with Debian's mosquitto package")
    acls = [
        {"acltype": kind, "topic": topic, "priority": 0, "allow": False} for kind, topic in denied
    ]
    config = {
        "defaultACLAccess": {
            "publishClientSend": True,
            "publishClientReceive": True,
            "subscribe": True,
            "unsubscribe": True,
        },
        "clients": [],
        "groups": [{"groupname": "anonymous", "roles": [{"rolename": "node"}]}],
        "anonymousGroup": "anonymous",
        "roles": [{"rolename": "node", "acls": acls}],
    }
    path = broker.directory / "dynamic-security.json"
    path.write_text(json.dumps(config))
    broker.extra_config = f"plugin {DYNSEC}\nplugin_opt_config_file {path}"
    broker.restart()
