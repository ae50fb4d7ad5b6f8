"""Agent processes for sync tests: a config against the test's broker, start, statuses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from edge_agent.sync.link import Message
from edge_agent.sync.signing import generate_keypair
from tests.conftest import Broker, agent_command, agent_env
from tests.sync.conftest import DISTRICT, NODE, PREFIX

BASE = f"{PREFIX}/{DISTRICT}/{NODE}"


def write_config(
    tmp_path: Path, broker: Broker, *, node: str = NODE, extra: str = "", commands: str = ""
) -> Path:
    """A technician's file (with comments) for one agent against `broker`."""
    if not (tmp_path / "ioc.key").exists():
        private, public = generate_keypair()
        (tmp_path / "ioc.key").write_bytes(private)
        (tmp_path / "ioc.pub").write_bytes(public)
    path = tmp_path / f"{node}.toml"
    path.write_text(
        f"""# Node {node}, installed by the district technician.
[node]
id = "{node}"  # from the asset register
district = "{DISTRICT}"
[paths]
state_dir = "{tmp_path / node / "state"}"
[mqtt]
# the provincial broker
host = "127.0.0.1"
port = {broker.port}
keepalive_s = 5
backoff_min_s = 0.2
backoff_max_s = 1.0
{extra}
[mqtt.commands]
public_keys = ["{tmp_path / "ioc.pub"}"]
{commands}
[[sensors]]
kind = "simulated"
name = "sim-1"
interval_s = 0.2
quantities = ["temperature"]
[web]
port = 0
"""
    )
    return path


def start(config: Path, agents: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    with (config.parent / "agent.log").open("ab") as log:
        process = subprocess.Popen(
            agent_command("run", "--config", str(config)),
            env=agent_env(mqtt=True),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    agents.append(process)
    return process


def statuses(messages: list[Message]) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic == f"{BASE}/status" and m.payload]
