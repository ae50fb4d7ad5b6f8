"""The whole agent as a process against a real broker: live data, will and birth."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from edge_agent.contract import Envelope
from edge_agent.sync.link import Link, Message
from tests.conftest import Broker
from tests.sync.agents import BASE, start, statuses, write_config
from tests.sync.conftest import NODE, client_options, eventually
from tests.sync.schema import validate_message

pytestmark = pytest.mark.asyncio


async def test_live_data_will_on_sigkill_birth_on_restart(
    broker: Broker, tmp_path: Path, agents: list[subprocess.Popen[bytes]]
) -> None:
    config = write_config(tmp_path, broker)
    messages: list[Message] = []
    async with Link(client_options(broker, "watch"), on_message=messages.append) as listener:
        await listener.subscribe(f"{BASE}/#")
        await _live_will_birth(config, agents, messages)
    # What the real agent published (sensor readings, births, will, clean offline) follows
    # the published schema.
    assert {validate_message(m.topic, m.payload) for m in messages} == {"envelope", "status"}


async def _live_will_birth(
    config: Path, agents: list[subprocess.Popen[bytes]], messages: list[Message]
) -> None:
    agent = start(config, agents)
    await eventually(lambda: any(s["state"] == "online" for s in statuses(messages)), timeout_s=30)
    data = lambda: [m for m in messages if m.topic == f"{BASE}/data/sim-1"]  # noqa: E731
    await eventually(lambda: len(data()) >= 6)
    # Readings in seq order on their stream; the sensor's own `sensor` state events share
    # the stream but go first by priority (events before readings).
    envelopes = [e for e in (Envelope.decode(m.payload) for m in data()) if e.kind == "reading"]
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
