"""Receivers and agents as the province and the districts run them: real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import agent_command, agent_env, free_port, stop_process


def scrape(port: int) -> dict[str, float]:
    """The unlabelled and labelled samples of a receiver's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@dataclass
class ReceiverProcess:
    """`edge-agent ioc receive` in a process of its own, so a test can SIGKILL it."""

    broker_port: int
    directory: Path
    client_id: str = "ioc-receiver"
    db: Path | None = None
    dsn: str | None = None
    extra: tuple[str, ...] = ()
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    def start(self) -> None:
        store = ["--dsn", self.dsn] if self.dsn else ["--db", str(self.db)]
        self.runs += 1
        log = (self.directory / f"{self.client_id}-{self.runs}.log").open("wb")
        self.process = subprocess.Popen(
            agent_command(
                "ioc",
                "receive",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.broker_port),
                "--client-id",
                self.client_id,
                "--metrics-port",
                str(self.metrics_port),
                "--keepalive",
                "5",
                *store,
                *self.extra,
            ),
            env=agent_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")
            for p in sorted(self.directory.glob(f"{self.client_id}-*.log"))
        )

    def metrics(self) -> dict[str, float]:
        try:
            return scrape(self.metrics_port)
        except OSError:
            return {}

    def subscribed(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"receiver exited {self.process.returncode}:\n{self.log()}")
        return self.metrics().get("ioc_broker_connected") == 1.0

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@dataclass
class AgentProcess:
    """`edge-agent run` on its embedded defaults, pointed at the test broker."""

    node: str
    directory: Path
    broker_port: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        env = agent_env(
            mqtt=True,
            EDGE_AGENT_NODE__ID=self.node,
            EDGE_AGENT_NODE__DISTRICT="d1",
            EDGE_AGENT_MQTT__HOST="127.0.0.1",
            EDGE_AGENT_MQTT__PORT=str(self.broker_port),
            EDGE_AGENT_MQTT__KEEPALIVE_S="5",
            EDGE_AGENT_WEB__PORT="0",
            **self.env,
        )
        log = (self.directory / "agent.log").open("wb")
        self.process = subprocess.Popen(
            agent_command("run"),
            cwd=self.directory,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()

    def freeze(self) -> None:
        """SIGSTOP: the process and its connections stay, nothing is sent or answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    @property
    def outbox(self) -> Path:
        return self.directory / "var" / "outbox.sqlite3"

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a frozen agent cannot stop
            stop_process(self.process)
            self.process = None


def ioc(*args: str) -> Any:
    """Run `edge-agent ioc ARGS --json` and return its JSON."""
    done = subprocess.run(
        agent_command("ioc", *args, "--json"),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait(check: Any, *, timeout_s: float = 60.0, what: str = "condition") -> None:
    """Poll a condition that a round trip through the broker makes true; the bound only
    ends a broken run."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s:.0f} s")
        time.sleep(0.1)
