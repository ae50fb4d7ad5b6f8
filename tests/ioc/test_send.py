"""`ioc send` against a real node (the sync component with its command processor)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from edge_agent.sync.signing import generate_keypair
from tests.conftest import Broker, agent_command, agent_env
from tests.sync.conftest import DISTRICT, NODE, eventually, mqtt_config, open_outbox, running_sync

pytestmark = pytest.mark.asyncio


async def ioc_send(broker: Broker, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *agent_command(
            "ioc",
            "send",
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            str(broker.port),
            "--timeout",
            "20",
        ),
        env=agent_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_send_signs_publishes_and_prints_the_reply(broker: Broker, tmp_path: Path) -> None:
    private, public = generate_keypair()
    (tmp_path / "ioc.key").write_bytes(private)
    (tmp_path / "ioc.pub").write_bytes(public)
    other, _ = generate_keypair()
    (tmp_path / "other.key").write_bytes(other)
    config = mqtt_config(broker, commands={"public_keys": [tmp_path / "ioc.pub"]})
    async with open_outbox(tmp_path) as outbox, running_sync(config, outbox) as sync:
        await eventually(lambda: sync.link is not None)
        # No --district: it is read from the node's retained status.
        code, out, err = await ioc_send(
            broker, "ping", "--node", NODE, "--key", str(tmp_path / "ioc.key")
        )
        assert code == 0, err
        reply = json.loads(out)
        assert reply["ok"] and reply["result"]["pong"] is True and reply["node"] == NODE

        code, out, err = await ioc_send(
            broker,
            "outbox.stats",
            "--node",
            NODE,
            "--district",
            DISTRICT,
            "--key",
            str(tmp_path / "other.key"),
        )
        assert code == 1
        assert json.loads(out)["error"]["code"] == "bad_signature"

        # MQTT 3.1.1 has no response topic: the node answers on reply/{verb}, and the
        # reply is picked out by the command id.
        code, out, err = await ioc_send(
            broker,
            "outbox.stats",
            "--node",
            NODE,
            "--key",
            str(tmp_path / "ioc.key"),
            "--protocol",
            "3.1.1",
        )
        assert code == 0, err
        assert json.loads(out)["result"]["epoch"] == outbox.epoch

        code, out, err = await ioc_send(
            broker,
            "ping",
            "--node",
            "nobody",
            "--key",
            str(tmp_path / "ioc.key"),
        )
        assert code == 78 and "--district" in err
