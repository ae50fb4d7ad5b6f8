"""Hostile input on `cmd/`: nothing a sender puts in a message (payload, properties, retain)
stops the node, and a flood of junk cannot starve signed commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.contract import dumps
from edge_agent.sync import Sync
from edge_agent.sync.signing import load_private_key, sign_command
from tests.conftest import Broker
from tests.sync.agents import start, statuses, write_config
from tests.sync.conftest import (
    DISTRICT,
    NODE,
    PREFIX,
    eventually,
    mqtt_config,
    open_outbox,
    running_sync,
)
from tests.sync.peer import Peer

pytestmark = pytest.mark.asyncio

BASE = f"{PREFIX}/{DISTRICT}/{NODE}"
VERBS = ["ping", "status", "config.get", "config.set", "snapshot", "outbox.stats", "junk"]
WILDCARDS = ["x/#", "#", "+", f"{BASE}/reply/#", f"{BASE}/reply/+/x", "a/+/b"]


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    from edge_agent.sync.signing import generate_keypair

    private, public = generate_keypair()
    (tmp_path / "ioc.key").write_bytes(private)
    (tmp_path / "ioc.pub").write_bytes(public)
    return load_private_key(tmp_path / "ioc.key")


@contextlib.asynccontextmanager
async def node_and_ioc(
    broker: Broker, tmp_path: Path, **commands: Any
) -> AsyncIterator[tuple[Sync, Peer]]:
    config = mqtt_config(broker, commands={"public_keys": [tmp_path / "ioc.pub"], **commands})
    with Peer(broker, "ioc") as ioc:
        await ioc.subscribe(f"{BASE}/reply/#")
        await ioc.subscribe(f"{BASE}/status")
        async with (
            open_outbox(tmp_path) as outbox,
            running_sync(config, outbox, state_dir=tmp_path) as sync,
        ):
            # The birth comes after the command subscription's SUBACK.
            await eventually(lambda: any(m.topic == f"{BASE}/status" for m in ioc.messages))
            yield sync, ioc


async def signed(
    ioc: Peer, key: Ed25519PrivateKey, verb: str = "ping", **kw: Any
) -> dict[str, Any]:
    """Send a signed command and wait for its reply."""
    command = sign_command(node=NODE, verb=verb, private_key=key, args=kw.pop("args", None))
    await ioc.publish(f"{BASE}/cmd/{verb}", dumps(command), **kw)
    await eventually(lambda: any(r["id"] == command["id"] for r in ioc.replies()))
    return next(r for r in ioc.replies() if r["id"] == command["id"])


async def test_wildcard_response_topics_on_any_verb_do_not_stop_the_node(
    broker: Broker, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    async with node_and_ioc(broker, tmp_path) as (sync, ioc):
        for verb in VERBS:
            for response_topic in WILDCARDS:
                await ioc.publish(f"{BASE}/cmd/{verb}", b"junk", response_topic=response_topic)
        for response_topic in WILDCARDS:
            reply = await signed(ioc, key, response_topic=response_topic)
            # Refused, and answered on the node's own reply topic, never on the wildcard.
            assert reply["error"]["code"] == "bad_response_topic", reply
            assert reply["_topic"] == f"{BASE}/reply/ping"
        assert (await signed(ioc, key))["ok"]
        assert all(r["_topic"].startswith(f"{BASE}/reply/") for r in ioc.replies())
        assert sync.health.counters["commands_rejected_bad_response_topic"] >= len(WILDCARDS)


async def test_retained_hostile_command_does_not_keep_the_agent_down(
    broker: Broker, tmp_path: Path, key: Ed25519PrivateKey, agents: list[subprocess.Popen[bytes]]
) -> None:
    config = write_config(tmp_path, broker)
    with Peer(broker, "attacker") as attacker:
        # mosquitto_pub -V 5 -r -t .../cmd/ping -D publish response-topic 'x/#' -m junk
        for verb in ("ping", "config.set"):
            await attacker.publish(f"{BASE}/cmd/{verb}", b"junk", retain=True, response_topic="x/#")
    with Peer(broker, "ioc") as ioc:
        await ioc.subscribe(f"{BASE}/reply/#")
        await ioc.subscribe(f"{BASE}/status")
        try:
            agent = start(config, agents)
            await eventually(
                lambda: any(s["state"] == "online" for s in statuses(ioc.messages)), timeout_s=30
            )
            await eventually(lambda: len(ioc.replies()) >= 2)
            assert {r["error"]["code"] for r in ioc.replies()} == {"retained"}
            assert (await signed(ioc, key))["ok"]
            assert agent.poll() is None
        finally:
            for verb in ("ping", "config.set"):
                await ioc.publish(f"{BASE}/cmd/{verb}", b"", retain=True)


async def test_hostile_json_gets_its_code_and_no_traceback(
    broker: Broker, tmp_path: Path, key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    good = sign_command(node=NODE, verb="ping", private_key=key)
    text = json.dumps(good)
    unsigned = {k: v for k, v in good.items() if k not in ("alg", "sig")}
    cases: list[tuple[bytes, str]] = [
        (b"[" * 60000, "bad_json"),
        (b'{"v": NaN}', "bad_json"),
        (text.replace('"args": {}', '"args": {"x": NaN}').encode(), "bad_json"),
        (text.replace('"args": {}', '"args": {"x": -Infinity}').encode(), "bad_json"),
        (text.replace('"args": {}', '"args": {"x": 1e999}').encode(), "bad_json"),
        (text.replace('"args": {}', '"args": {"x": ' + "9" * 5000 + "}").encode(), "bad_json"),
        (json.dumps(unsigned).encode(), "bad_signature"),
        (json.dumps({**good, "sig": 12}).encode(), "bad_signature"),
        (text.replace(good["id"], "\\ud800").encode(), "bad_signature"),
    ]
    caplog.set_level(logging.INFO)
    async with node_and_ioc(broker, tmp_path) as (_sync, ioc):
        for payload, code in cases:
            before = len(ioc.replies())
            await ioc.publish(f"{BASE}/cmd/ping", payload)
            await eventually(lambda: len(ioc.replies()) > before)  # noqa: B023
            reply = ioc.replies()[before]
            assert reply["error"]["code"] == code, (payload[:80], reply)
        assert (await signed(ioc, key))["ok"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    ]


async def test_junk_flood_does_not_starve_signed_commands(
    broker: Broker, tmp_path: Path, key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.sync")
    junk = [
        b"\xff\xfe garbage",
        b"{not json",
        b'{"v": 1, "id": "x"}',
        json.dumps(
            sign_command(node=NODE, verb="ping", private_key=key) | {"sig": "AAAA"}
        ).encode(),
    ]
    async with node_and_ioc(broker, tmp_path) as (sync, ioc):
        with Peer(broker, "attacker") as attacker:
            flooding = True
            sent = 0

            def taken() -> float:
                # Junk the node has taken in (refused, or dropped for lack of room).
                counters = sync.health.counters
                return sum(v for k, v in counters.items() if k.startswith("commands_rejected_")) + (
                    counters.get("commands_dropped_busy", 0)
                )

            async def flood() -> None:
                # Always about a thousand junk messages on their way, however fast this
                # machine lets the node read: the test is about order, not about raw speed.
                nonlocal sent
                while flooding:
                    if sent - taken() < 1000:
                        for i in range(250):
                            attacker.send(f"{BASE}/cmd/ping", junk[i % len(junk)], qos=0)
                        sent += 250
                    await asyncio.sleep(0.01)

            flooder = asyncio.create_task(flood())
            try:
                await eventually(
                    lambda: sync.health.counters.get("commands_rejected_bad_json", 0) > 500
                )
                before = taken()
                ids = []
                for _ in range(20):
                    command = sign_command(node=NODE, verb="ping", private_key=key)
                    ids.append(command["id"])
                    await ioc.publish(f"{BASE}/cmd/ping", dumps(command))
                    await asyncio.sleep(0.05)
                answered = lambda: {r["id"] for r in ioc.replies() if r["ok"]}  # noqa: E731
                await eventually(lambda: set(ids) <= answered(), timeout_s=30)
                # The junk kept flowing all along, far more of it than signed pings.
                assert not flooder.done() and taken() - before > 1000
            finally:
                flooding = False
                await flooder
    rejected = sum(v for k, v in sync.health.counters.items() if k.startswith("commands_rejected_"))
    assert rejected > 1000 and sent > 1000
    # Replies to junk and log lines about it are rate-limited, not one per message.
    assert len([r for r in ioc.replies() if not r["ok"]]) < rejected / 5
    lines = [
        r
        for r in caplog.records
        if r.name.startswith("edge_agent.sync") and "rejected" in r.getMessage()
    ]
    assert len(lines) < 20, len(lines)
