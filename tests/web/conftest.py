"""Fixtures for the status page tests: a real agent process on a free port with a config of
the test's, an access code, the pinned axe-core, promtool and Debian's chromium."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.web.access import AccessCode
from tests.conftest import (
    IN_CI,
    REPO,
    agent_command,
    agent_env,
    free_port,
    require_binary,
    stop_process,
    wait_for_port,
)
from tests.web.fetch_axe import AXE_JS

ACCESS_CODE = "cổng-4821"
CLIP = REPO / "media" / "vtest.avi"
ARTEFACTS = REPO / ".cache" / "test-artefacts" / "web"


def require_file(path: Path, how: str) -> Path:
    """A file the tests need; in CI a missing one fails instead of skipping."""
    if not path.is_file():
        message = f"{path} missing: {how}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class RunningAgent:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        """A plain blocking GET (status, headers, body), for waits outside the event loop."""
        request = urllib.request.Request(self.base + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read()

    def wait_for(self, check: Callable[[], bool], *, timeout_s: float = 60.0) -> None:
        """Poll `check` until it holds; the timeout bounds a broken run, it asserts nothing."""
        deadline = time.monotonic() + timeout_s
        while not check():
            if self.process.poll() is not None:
                raise AssertionError(f"agent exited {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in time; agent log:\n{self.log()[-3000:]}")
            time.sleep(0.1)


def launch_agent(
    directory: Path,
    config: str | None = None,
    *,
    mqtt: bool = False,
    env: dict[str, str] | None = None,
) -> RunningAgent:
    """Start `edge-agent run` in `directory` with the given TOML (the page's port is chosen
    here, through the environment) and wait until the page listens."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    command = agent_command("run")
    if config is not None:
        path = directory / "edge-agent.toml"
        path.write_text(config)
        command += ["--config", str(path)]
    log_path = directory / "agent.log"
    extra = dict(env or {})
    if mqtt and "[mqtt]" not in (config or "") and "EDGE_AGENT_MQTT__PORT" not in extra:
        # A link that fails (the broker unreachable), on a port of the test's own: never
        # the default 1883, where a developer's broker may listen.
        extra["EDGE_AGENT_MQTT__HOST"] = "127.0.0.1"
        extra["EDGE_AGENT_MQTT__PORT"] = str(free_port())
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=agent_env(mqtt=mqtt, EDGE_AGENT_WEB__PORT=str(port), **extra),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    agent = RunningAgent(process, port, directory, log_path)
    try:
        wait_for_port(port, timeout_s=60, process=process)
    except (RuntimeError, TimeoutError) as exc:
        stop_process(process)
        raise AssertionError(f"{exc}:\n{agent.log()}") from None
    return agent


StartAgent = Callable[..., RunningAgent]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    """`start_agent(config, mqtt=..., env=...)`; every agent is stopped after the test."""
    started: list[RunningAgent] = []

    def start(
        config: str | None = None, *, mqtt: bool = False, env: dict[str, str] | None = None
    ) -> RunningAgent:
        agent = launch_agent(tmp_path / f"agent-{len(started)}", config, mqtt=mqtt, env=env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        stop_process(agent.process)


@pytest.fixture(scope="session")
def access_code_hash() -> str:
    return AccessCode.create(ACCESS_CODE).encode()


@pytest.fixture(scope="session")
def clip() -> Path:
    return require_file(CLIP, "run scripts/fetch-media")


@pytest.fixture(scope="session")
def axe_js() -> str:
    return require_file(AXE_JS, "run scripts/setup (tests/web/fetch_axe.py)").read_text()


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool", package="prometheus")


@pytest.fixture(scope="session")
def chromium() -> str:
    return require_binary("chromium", package="chromium")


SAVED: list[Path] = []


@pytest.fixture(scope="session")
def artefacts() -> Path:
    """Where the browser tests keep their screenshots (git-ignored)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return ARTEFACTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SAVED:
        terminalreporter.write_sep("-", "status page screenshots")
        for path in SAVED:
            terminalreporter.write_line(str(path))
