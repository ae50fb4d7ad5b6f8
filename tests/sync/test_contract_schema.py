"""Every payload the agent sends validates against the published JSON Schema."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from jsonschema import ValidationError

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
    put_readings,
    running_sync,
)
from tests.sync.schema import validate, validate_message

BASE = f"{PREFIX}/{DISTRICT}/{NODE}"


@pytest.mark.asyncio
async def test_everything_published_validates(broker: Broker, tmp_path: Path) -> None:
    private, public = generate_keypair()
    (tmp_path / "k").write_bytes(private)
    (tmp_path / "k.pub").write_bytes(public)
    key = load_private_key(tmp_path / "k")
    seen: list[Message] = []
    config = mqtt_config(broker, batch_min_events=5, commands={"public_keys": [tmp_path / "k.pub"]})
    async with (
        Link(client_options(broker, "watch"), on_message=seen.append) as watcher,
        open_outbox(tmp_path) as outbox,
    ):
        await watcher.subscribe(f"{PREFIX}/#")
        await put_readings(outbox, 40)  # a backlog: batches
        async with running_sync(config, outbox) as sync:
            await eventually(lambda: outbox.stats()["pending_rows"] == 0)
            await put_readings(outbox, 1)  # live: one envelope
            await eventually(lambda: outbox.stats()["pending_rows"] == 0)
            for verb, args in [
                ("ping", {}),
                ("status", {}),
                ("config.get", {}),
                ("outbox.stats", {}),
                ("snapshot", {"camera": "gate"}),
                ("snapshot", {"camera": "missing"}),
                ("config.set", {"changes": {"a.b": 1}}),
            ]:
                command = sign_command(node=NODE, verb=verb, args=args, private_key=key)
                validate("command", command)
                await watcher.publish(f"{BASE}/cmd/{verb}", json.dumps(command).encode())
            await watcher.publish(f"{BASE}/cmd/ping", b"garbage")
            await eventually(lambda: sum("/reply/" in m.topic for m in seen) == 8)
            will = sync._status_payload("offline", reason="will")
        await eventually(lambda: json.loads(seen[-1].payload).get("state") == "offline")
    validate("status", json.loads(will))
    kinds = Counter(validate_message(m.topic, m.payload) for m in seen if "/cmd/" not in m.topic)
    assert kinds["batch"] >= 1 and kinds["envelope"] >= 1
    assert kinds["reply"] == 8 and kinds["status"] >= 2


def test_schema_rejects_what_the_contract_forbids() -> None:
    good = {
        "v": 1,
        "node": "n1",
        "epoch": "e",
        "seq": 1,
        "ts": "2026-01-01T00:00:00.000Z",
        "kind": "reading",
        "data": {"sensor": "s", "quantity": "t", "value": 1.5, "unit": "C", "quality": "ok"},
    }
    validate("envelope", good)
    for bad in (
        {**good, "seq": 0},
        {**good, "v": 2},
        {**good, "ts": "yesterday"},
        {**good, "extra": 1},
        {**good, "data": {"sensor": "s"}},
    ):
        with pytest.raises(ValidationError):
            validate("envelope", bad)
