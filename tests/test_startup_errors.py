"""Start-up failures a technician fixes in the config or on the filesystem exit 78 (systemd
does not restart into them) and name the key or the path; what a restart may cure stays 1."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import agent_command, agent_env


def run_agent(config: Path, *, drop_root: bool = False) -> subprocess.CompletedProcess[str]:
    command = agent_command("run", "--config", str(config))
    if drop_root and os.geteuid() == 0:
        # Root writes anywhere; without its capabilities it meets what the service user would.
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", *command]
    return subprocess.run(
        command, env=agent_env(), capture_output=True, text=True, timeout=60, check=False
    )


def write_config(tmp_path: Path, state_dir: Path, extra: str = "") -> Path:
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f'sensors = []\ncameras = []\n[paths]\nstate_dir = "{state_dir}"\n[web]\nport = 0\n{extra}'
    )
    return config


def state_is_a_file(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.write_text("not a directory")
    return state


def state_is_read_only(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o555)
    return state


def outbox_is_a_directory(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    (state / "outbox.sqlite3").mkdir(parents=True)
    return state


def parent_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "state"


@pytest.mark.parametrize(
    ("make_state", "expected"),
    [
        (state_is_a_file, "is a file, not a directory"),
        (state_is_read_only, "cannot create files in it"),
        (outbox_is_a_directory, "outbox.sqlite3 is a directory"),
        (parent_is_a_file, "a part of the path is a file"),
    ],
    ids=["state-dir-is-a-file", "state-dir-read-only", "outbox-is-a-directory", "parent-file"],
)
def test_state_dir_problems_exit_78_naming_the_path(
    tmp_path: Path, make_state: Callable[[Path], Path], expected: str
) -> None:
    state = make_state(tmp_path)
    try:
        result = run_agent(write_config(tmp_path, state), drop_root=True)
    finally:
        if state.is_dir():
            state.chmod(0o755)
    assert result.returncode == 78, result.stderr
    assert f"paths.state_dir: {expected}" in result.stderr
    assert str(state) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_web_port_exits_78_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, tmp_path / "state")
        config.write_text(config.read_text().replace("port = 0", f"port = {port}"))
        result = run_agent(config)
    assert result.returncode == 78, result.stderr
    assert f"web.port: the status page cannot listen on 127.0.0.1:{port}" in result.stderr


def test_an_unresolvable_web_host_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "state")
    config.write_text(config.read_text() + 'host = "no-such-host.invalid"\n')
    result = run_agent(config)
    assert result.returncode == 78, result.stderr
    assert "web.host: cannot resolve 'no-such-host.invalid'" in result.stderr


def test_an_empty_broker_host_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "state", '[mqtt]\nhost = ""\n')
    result = run_agent(config)
    assert result.returncode == 78, result.stderr
    assert "mqtt.host: String should have at least 1 character" in result.stderr
