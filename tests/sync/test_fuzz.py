"""The command handler fuzzed through a real broker: hypothesis makes payloads (bytes, JSON
with NaN and deep nesting, signed commands with a field changed) and MQTT 5 properties
(response topics with wildcards, correlation data, user properties, content types), retained
or not. After every message the node must still run and answer a signed ping.

Sized for CI (`FUZZ_EXAMPLES`, default 200); a longer run for the bench or by hand:
`FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/sync/test_fuzz.py -p no:cacheprovider`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.contract import dumps
from edge_agent.sync import Sync
from edge_agent.sync.signing import generate_keypair, load_private_key, sign_command
from tests.conftest import Broker
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

BASE = f"{PREFIX}/{DISTRICT}/{NODE}"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
VERBS = ["ping", "status", "config.get", "config.set", "snapshot", "outbox.stats"]

# What mosquitto itself accepts from a sender (it drops clients that send U+0000 or
# surrogates); everything else is fair game.
TEXT = st.characters(blacklist_categories=("Cs", "Cc"))
LEVEL = st.text(TEXT, min_size=1, max_size=20).filter(lambda s: not set(s) & set("/+#"))
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=15,
)


class Node:
    """The node under fuzz, started once for all examples (if a message stops it, the
    `running_sync` exit says with what)."""

    def __init__(self, broker: Broker, tmp_path: Path) -> None:
        self.broker = broker
        self.tmp_path = tmp_path
        self.stack = contextlib.AsyncExitStack()
        self.sync: Sync | None = None
        private, public = generate_keypair()
        (tmp_path / "ioc.key").write_bytes(private)
        (tmp_path / "ioc.pub").write_bytes(public)
        self.key = load_private_key(tmp_path / "ioc.key")
        self.template = sign_command(node=NODE, verb="ping", private_key=self.key, ttl_s=3000)

    async def ensure(self) -> Sync:
        if self.sync is None:
            config = mqtt_config(self.broker, commands={"public_keys": [self.tmp_path / "ioc.pub"]})
            outbox = await self.stack.enter_async_context(open_outbox(self.tmp_path))
            self.sync = await self.stack.enter_async_context(
                running_sync(config, outbox, state_dir=self.tmp_path)
            )
            await eventually(lambda: self.sync is not None and self.sync.link is not None)
        assert self.sync is not None
        return self.sync


@pytest_asyncio.fixture
async def node(broker: Broker, tmp_path: Path) -> AsyncIterator[tuple[Node, Peer, Peer]]:
    under_fuzz = Node(broker, tmp_path)
    with Peer(broker, "ioc") as ioc, Peer(broker, "fuzzer") as fuzzer:
        await ioc.subscribe(f"{BASE}/reply/#")
        try:
            yield under_fuzz, ioc, fuzzer
        finally:
            await under_fuzz.stack.aclose()


def _mutated(template: dict[str, Any], key: str, value: Any, drop: bool) -> bytes:
    command = dict(template)
    if drop:
        command.pop(key, None)
    else:
        command[key] = value
    return json.dumps(command, allow_nan=True).encode()


@st.composite
def payloads(draw: st.DrawFn, template: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "command", "nested", "text"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(JSON), allow_nan=True).encode()
    if kind == "command":
        key = draw(st.sampled_from([*template, "extra"]))
        return _mutated(template, key, draw(JSON), draw(st.booleans()))
    if kind == "nested":
        depth = draw(st.integers(1, 50_000))
        return draw(st.sampled_from([b"[", b'{"a":'])) * depth
    return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "verb": draw(st.sampled_from(VERBS) | LEVEL),
        "retain": draw(st.booleans()),
        "qos": draw(st.sampled_from([0, 1])),
        "response_topic": draw(
            st.none()
            | st.sampled_from(["x/#", "#", "+", f"{BASE}/reply/#", f"{BASE}/reply/ok/1"])
            | st.text(TEXT, min_size=1, max_size=60)
        ),
        "correlation_data": draw(st.none() | st.binary(max_size=2000)),
        "user_properties": draw(st.lists(st.tuples(st.text(TEXT), st.text(TEXT)), max_size=3)),
        "content_type": draw(st.none() | st.text(TEXT, max_size=40)),
    }


@pytest.mark.asyncio
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=messages(), data=st.data())
async def test_nothing_on_cmd_stops_the_node(
    node: tuple[Node, Peer, Peer], message: dict[str, Any], data: st.DataObject
) -> None:
    under_fuzz, ioc, fuzzer = node
    sync = await under_fuzz.ensure()
    payload = data.draw(payloads(under_fuzz.template))
    topic = f"{BASE}/cmd/{message.pop('verb')}"
    await fuzzer.publish(topic, payload, **message)
    if message["retain"]:
        await fuzzer.publish(topic, b"", retain=True)  # do not let it pile up on the broker
    # Still alive: a signed ping is answered.
    ping = sign_command(node=NODE, verb="ping", private_key=under_fuzz.key)
    await ioc.publish(f"{BASE}/cmd/ping", dumps(ping))
    await eventually(
        lambda: any(r["id"] == ping["id"] and r["ok"] for r in ioc.replies("ping")), period_s=0.002
    )
    assert sync.link is not None
    del ioc.messages[:]  # keep the replies scanned per example few
    await asyncio.sleep(0)
