"""`config.set` on a real agent process: comments kept, a change that cuts the node off or
cannot start is rolled back and said so (a reply, an alert, an audit event), a broken file
is `invalid_config`."""

from __future__ import annotations

import json
import socket
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edge_agent.contract import Envelope, decode_data
from edge_agent.sync.signing import load_private_key, sign_command
from tests.conftest import Broker, free_port
from tests.sync.agents import BASE, start, statuses, write_config
from tests.sync.conftest import NODE, eventually
from tests.sync.peer import Peer
from tests.sync.schema import validate_message

pytestmark = pytest.mark.asyncio

CONFIRM_S = 4


def events(ioc: Peer, kind: str) -> list[Envelope]:
    """Events of `kind` received, single or in batches (a backlog after a rollback)."""
    return [
        envelope
        for m in list(ioc.messages)
        if m.topic.startswith(f"{BASE}/data/")
        for envelope in decode_data(m.topic, m.payload)
        if envelope.kind == kind
    ]


async def test_config_set_keeps_comments_and_rolls_back_what_cuts_the_node_off(
    broker: Broker, tmp_path: Path, agents: list[subprocess.Popen[bytes]]
) -> None:
    config = write_config(tmp_path, broker, commands=f"confirm_s = {CONFIRM_S}")
    key = load_private_key(tmp_path / "ioc.key")
    with Peer(broker, "ioc") as ioc:
        for topic in ("status", "reply/#", "data/#"):
            await ioc.subscribe(f"{BASE}/{topic}")
        start(config, agents)
        await eventually(
            lambda: any(s["state"] == "online" for s in statuses(ioc.messages)), timeout_s=30
        )
        first_hash = statuses(ioc.messages)[-1]["config_hash"]

        async def config_set(changes: dict[str, Any], *, answers: int = 1) -> list[dict[str, Any]]:
            command = sign_command(
                node=NODE, verb="config.set", args={"changes": changes}, private_key=key
            )
            await ioc.publish(f"{BASE}/cmd/config.set", json.dumps(command).encode())
            mine = lambda: [r for r in ioc.replies("config.set") if r["id"] == command["id"]]  # noqa: E731
            await eventually(lambda: len(mine()) >= answers, timeout_s=60)
            return mine()

        def online_again(births: int) -> bool:
            now = statuses(ioc.messages)
            return len(now) > births and now[-1]["state"] == "online"

        # A good change: applied, confirmed by the new birth, the technician's comments kept.
        births = len(statuses(ioc.messages))
        [reply] = await config_set({"mqtt.keepalive_s": 7})
        assert reply["ok"] and reply["result"]["confirm_s"] == CONFIRM_S, reply
        await eventually(lambda: online_again(births + 1), timeout_s=30)
        second_hash = statuses(ioc.messages)[-1]["config_hash"]
        assert second_hash != first_hash
        text = config.read_text()
        assert tomllib.loads(text)["mqtt"]["keepalive_s"] == 7
        for comment in (
            "# Node node-a, installed by",
            "# from the asset register",
            "# the provincial broker",
        ):
            assert comment in text, comment

        # Valid, but the node can no longer reach the broker: no birth within the confirm
        # window, so the previous file and settings come back, and the IOC is told.
        births = len(statuses(ioc.messages))
        answers = await config_set({"mqtt.port": free_port()}, answers=2)
        assert answers[0]["ok"]
        assert not answers[1]["ok"] and answers[1]["error"]["code"] == "rolled_back", answers
        assert statuses(ioc.messages)[-1]["config_hash"] == second_hash
        assert tomllib.loads(config.read_text())["mqtt"]["port"] == broker.port
        assert "# the provincial broker" in config.read_text()
        await eventually(
            lambda: any(e.data["alert"] == "config_rollback" for e in events(ioc, "alert"))
        )
        await eventually(
            lambda: (
                {"config_set", "config_rollback"} <= {e.data["event"] for e in events(ioc, "audit")}
            )
        )
        [alert] = [e for e in events(ioc, "alert") if e.data["alert"] == "config_rollback"]
        assert (
            alert.data["changed"] == ["mqtt.port"] and alert.data["command_id"] == answers[0]["id"]
        )

        # Valid, but cannot start: the status page port is taken. Rolled back as well.
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            answers = await config_set({"web.port": busy.getsockname()[1]}, answers=2)
        assert answers[1]["error"]["code"] == "rolled_back", answers
        restored = tomllib.loads(config.read_text())
        assert restored["web"]["port"] == 0 and restored["mqtt"]["keepalive_s"] == 7

        [bad] = await config_set({"mqtt.port": "not a port"})
        assert bad["error"]["code"] == "invalid_config" and "mqtt.port" in bad["error"]["message"]

        # A file broken by hand since the start: said as invalid_config, not a traceback.
        config.write_text(config.read_text() + "\n[mqtt\n")
        [broken] = await config_set({"mqtt.keepalive_s": 9})
        assert broken["error"]["code"] == "invalid_config", broken
        assert "invalid TOML" in broken["error"]["message"]
    # Everything the agent published, the rollback's reply and alert included, is contract.
    published = {validate_message(m.topic, m.payload) for m in ioc.messages}
    assert {"status", "reply", "envelope", "batch"} >= published >= {"status", "reply"}
