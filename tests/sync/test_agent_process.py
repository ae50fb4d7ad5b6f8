"""The whole agent as a process against a real broker: live data, will and birth, config.set."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.contract import Envelope
from edge_agent.sync.link import Link, Message
from edge_agent.sync.signing import generate_keypair, load_private_key, sign_command
from tests.conftest import Broker, agent_command, agent_env
from tests.sync.conftest import DISTRICT, NODE, PREFIX, client_options, eventually
from tests.sync.schema import validate_message

pytestmark = pytest.mark.asyncio

BASE = f"{PREFIX}/{DISTRICT}/{NODE}"


def write_config(tmp_path: Path, broker: Broker) -> Path:
    private, public = generate_keypair()
    (tmp_path / "ioc.key").write_bytes(private)
    (tmp_path / "ioc.pub").write_bytes(public)
    path = tmp_path / "edge-agent.toml"
    path.write_text(
        f"""
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
[mqtt.commands]
public_keys = ["{tmp_path / "ioc.pub"}"]
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


@pytest.fixture
def agents() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


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


async def test_live_data_will_on_sigkill_birth_on_restart(
    broker: Broker, tmp_path: Path, agents: list[subprocess.Popen[bytes]]
) -> None:
    config = write_config(tmp_path, broker)
    messages: list[Message] = []
    listener = Link(client_options(broker, "watch"), on_message=messages.append)
    await listener.connect()
    await listener.subscribe(f"{BASE}/#")

    agent = start(config, agents)
    await eventually(lambda: any(s["state"] == "online" for s in statuses(messages)), timeout_s=30)
    data = lambda: [m for m in messages if m.topic == f"{BASE}/data/sim-1"]  # noqa: E731
    await eventually(lambda: len(data()) >= 5)
    envelopes = [Envelope.decode(m.payload) for m in data()]
    seqs = [e.seq for e in envelopes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert {e.node for e in envelopes} == {NODE} and envelopes[0].data["unit"]
    birth = statuses(messages)[-1]
    assert birth["epoch"] == envelopes[0].epoch and birth["config_hash"]
    # Committed before the data went out, so the birth's last seq is a real one.
    assert isinstance(birth["last_seq"], int) and birth["last_seq"] >= 0

    agent.send_signal(signal.SIGKILL)
    agent.wait()
    await eventually(lambda: statuses(messages)[-1]["state"] == "offline")
    assert statuses(messages)[-1]["reason"] == "will"

    last_sent = max(Envelope.decode(m.payload).seq for m in data())
    agent = start(config, agents)
    await eventually(lambda: statuses(messages)[-1]["state"] == "online", timeout_s=30)
    # The restarted agent's birth: the same epoch, and the seq it got to before the kill.
    reborn = statuses(messages)[-1]
    assert reborn["epoch"] == envelopes[0].epoch
    assert isinstance(reborn["last_seq"], int) and reborn["last_seq"] >= last_sent
    agent.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(agent.wait, 15) == 0
    await eventually(lambda: statuses(messages)[-1]["state"] == "offline")
    assert "reason" not in statuses(messages)[-1]  # said by the node itself, not the will
    await listener.disconnect()
    # What the real agent published (sensor readings, births, will, clean offline) follows
    # the published schema.
    assert {validate_message(m.topic, m.payload) for m in messages} == {"envelope", "status"}


async def test_config_set_restarts_components_and_rolls_back_a_failing_one(
    broker: Broker, tmp_path: Path, agents: list[subprocess.Popen[bytes]]
) -> None:
    config = write_config(tmp_path, broker)
    key = load_private_key(tmp_path / "ioc.key")
    messages: list[Message] = []
    ioc = Link(client_options(broker, "ioc"), on_message=messages.append)
    await ioc.connect()
    await ioc.subscribe(f"{BASE}/#")
    start(config, agents)
    await eventually(lambda: any(s["state"] == "online" for s in statuses(messages)), timeout_s=30)
    first_hash = statuses(messages)[-1]["config_hash"]

    async def config_set(changes: dict[str, Any]) -> dict[str, Any]:
        command = sign_command(
            node=NODE, verb="config.set", args={"changes": changes}, private_key=key
        )
        await ioc.publish_wait(f"{BASE}/cmd/config.set", json.dumps(command).encode())
        replies = lambda: [  # noqa: E731
            json.loads(m.payload)
            for m in messages
            if m.topic.endswith("/reply/config.set")
            and json.loads(m.payload)["id"] == command["id"]
        ]
        await eventually(lambda: bool(replies()))
        return replies()[0]

    births = len(statuses(messages))
    reply = await config_set({"mqtt.keepalive_s": 7})
    assert reply["ok"], reply
    await eventually(lambda: len(statuses(messages)) > births + 1, timeout_s=30)
    await eventually(lambda: statuses(messages)[-1]["state"] == "online", timeout_s=30)
    second_hash = statuses(messages)[-1]["config_hash"]
    assert second_hash != first_hash
    assert tomllib.loads(config.read_text())["mqtt"]["keepalive_s"] == 7

    # Valid, but cannot start: the status page port is taken. The agent must roll back.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        births = len(statuses(messages))
        reply = await config_set({"web.port": busy.getsockname()[1]})
        assert reply["ok"], reply
        await eventually(lambda: len(statuses(messages)) > births + 1, timeout_s=30)
        await eventually(lambda: statuses(messages)[-1]["state"] == "online", timeout_s=30)
        assert statuses(messages)[-1]["config_hash"] == second_hash
    restored = tomllib.loads(config.read_text())
    assert restored["web"]["port"] == 0 and restored["mqtt"]["keepalive_s"] == 7

    bad = await config_set({"mqtt.port": "not a port"})
    assert not bad["ok"] and bad["error"]["code"] == "invalid_config"
    assert "mqtt.port" in bad["error"]["message"]
    await ioc.disconnect()
