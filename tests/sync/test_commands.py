"""Remote commands end to end through a real broker: every verb, every reason to refuse."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.contract import dumps
from edge_agent.sync.link import Link, Message
from edge_agent.sync.signing import generate_keypair, load_private_key, sign_command
from tests.conftest import Broker
from tests.sync.conftest import (
    DISTRICT,
    NODE,
    PREFIX,
    client_options,
    eventually,
    mqtt_config,
    open_outbox,
    running_sync,
)

pytestmark = pytest.mark.asyncio

BASE = f"{PREFIX}/{DISTRICT}/{NODE}"


class Ioc:
    def __init__(self, link: Link, replies: list[Message], key_path: Path) -> None:
        self.link = link
        self.replies = replies
        self.key = load_private_key(key_path)

    def sign(self, verb: str, args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        kw.setdefault("node", NODE)
        return sign_command(verb=verb, args=args, private_key=self.key, **kw)

    async def send(
        self, verb: str, payload: bytes | dict[str, Any], *, retain: bool = False, **kw: Any
    ) -> dict[str, Any]:
        raw = payload if isinstance(payload, bytes) else dumps(payload)
        before = len(self.replies)
        await self.link.publish(f"{BASE}/cmd/{verb}", raw, retain=retain, **kw)
        await eventually(lambda: len(self.replies) > before)
        reply: dict[str, Any] = json.loads(self.replies[before].payload)
        reply["_topic"] = self.replies[before].topic
        reply["_correlation"] = self.replies[before].correlation_data
        return reply


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = generate_keypair()
    (tmp_path / "ioc.key").write_bytes(private)
    (tmp_path / "ioc.pub").write_bytes(public)
    return tmp_path / "ioc.key", tmp_path / "ioc.pub"


@contextlib.asynccontextmanager
async def node_and_ioc(
    broker: Broker, tmp_path: Path, keys: tuple[Path, Path], **commands: Any
) -> AsyncIterator[Ioc]:
    config = mqtt_config(broker, commands={"public_keys": [keys[1]], **commands})
    replies: list[Message] = []
    async with (
        open_outbox(tmp_path) as outbox,
        running_sync(config, outbox, state_dir=tmp_path),
        Link(client_options(broker, "ioc-cmd"), on_message=replies.append) as ioc,
    ):
        await ioc.subscribe(f"{BASE}/reply/#")
        await ioc.subscribe(f"{PREFIX}/{DISTRICT}/{NODE}/status")
        await eventually(lambda: any(b'"online"' in m.payload for m in replies))
        replies.clear()
        yield Ioc(ioc, replies, keys[0])


async def test_every_verb_answers(broker: Broker, tmp_path: Path, keys: tuple[Path, Path]) -> None:
    async with node_and_ioc(broker, tmp_path, keys) as ioc:
        ping = await ioc.send("ping", ioc.sign("ping"))
        assert ping["ok"] and ping["result"]["pong"] and ping["_topic"] == f"{BASE}/reply/ping"
        status = await ioc.send("status", ioc.sign("status"))
        assert status["result"]["node"]["id"] == NODE
        config = await ioc.send("config.get", ioc.sign("config.get"))
        assert config["result"]["mqtt"]["password"] == "**********"
        stats = await ioc.send("outbox.stats", ioc.sign("outbox.stats"))
        assert stats["result"]["pending_rows"] == 0
        snap = await ioc.send("snapshot", ioc.sign("snapshot", {"camera": "gate"}))
        assert base64.b64decode(snap["result"]["jpeg_base64"]).startswith(b"\xff\xd8")
        nocam = await ioc.send("snapshot", ioc.sign("snapshot", {"camera": "nope"}))
        assert nocam["error"]["code"] == "unknown_camera"
        changed = await ioc.send(
            "config.set", ioc.sign("config.set", {"changes": {"mqtt.keepalive_s": 20}})
        )
        assert changed["ok"] and changed["result"]["changed"] == ["mqtt.keepalive_s"]
        refused = await ioc.send("config.set", ioc.sign("config.set", {"changes": {"bad.key": 1}}))
        assert refused["error"]["code"] == "invalid_config"
        # MQTT 5 request/response: the reply goes to the response topic with the correlation.
        command = ioc.sign("ping")
        answer = await ioc.send(
            "ping", command, response_topic=f"{BASE}/reply/custom", correlation_data=b"abc"
        )
        assert answer["_topic"] == f"{BASE}/reply/custom"
        assert answer["_correlation"] == b"abc" and answer["id"] == command["id"]


async def test_bad_commands_are_refused_with_a_reason(
    broker: Broker, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    other_private, _ = generate_keypair()
    (tmp_path / "other.key").write_bytes(other_private)
    async with node_and_ioc(broker, tmp_path, keys, max_payload_bytes=1024) as ioc:
        forged = sign_command(
            node=NODE, verb="ping", private_key=load_private_key(tmp_path / "other.key")
        )
        tampered = ioc.sign("config.get")
        tampered["args"] = {"extra": True}
        replayed = ioc.sign("ping")
        assert (await ioc.send("ping", replayed))["ok"]
        now = time.time()
        cases: list[tuple[str, bytes | dict[str, Any], str, bool]] = [
            ("ping", forged, "bad_signature", False),
            ("config.get", tampered, "bad_signature", False),
            ("ping", replayed, "replayed", False),
            ("ping", ioc.sign("ping", issued_at=now - 1000, ttl_s=60), "expired", False),
            ("ping", ioc.sign("ping", issued_at=now + 1000), "future", False),
            ("ping", ioc.sign("ping", node="node-b"), "wrong_node", False),
            ("ping", ioc.sign("ping"), "retained", True),
            ("ping", b'{"pad": "' + b"x" * 2000 + b'"}', "too_large", False),
            ("ping", b"{not json", "bad_json", False),
            ("ping", b'{"v": 1, "\xff\xfe": 1}', "bad_utf8", False),
            ("ping", {"v": 1, "id": "x"}, "bad_schema", False),
            ("ping", ioc.sign("status"), "bad_schema", False),
            ("ping", ioc.sign("ping", ttl_s=10**6), "ttl_too_long", False),
            ("reboot", ioc.sign("reboot"), "unknown_verb", False),
        ]
        for verb, payload, code, retain in cases:
            reply = await ioc.send(verb, payload, retain=retain)
            assert not reply["ok"], code
            assert reply["error"]["code"] == code, (code, reply)
            assert reply["_topic"] == f"{BASE}/reply/{verb if verb != 'reboot' else 'invalid'}"
            if retain:  # clear the retained message; the node refuses the clear as well
                cleared = await ioc.send(verb, b"", retain=True)
                assert cleared["error"]["code"] == "retained"
        # still alive and answering
        assert (await ioc.send("ping", ioc.sign("ping")))["ok"]


async def test_hmac_signed_commands(
    broker: Broker, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    secret = b"per-node-secret-0123456789"
    async with node_and_ioc(broker, tmp_path, keys, hmac_key=secret.decode()) as ioc:
        good = sign_command(node=NODE, verb="ping", hmac_key=secret)
        assert (await ioc.send("ping", good))["ok"]
        wrong = sign_command(node=NODE, verb="ping", hmac_key=b"another-nodes-key")
        assert (await ioc.send("ping", wrong))["error"]["code"] == "bad_signature"
        # the Ed25519 key configured beside it still works
        assert (await ioc.send("ping", ioc.sign("ping")))["ok"]
