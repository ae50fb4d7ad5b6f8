"""Audit events for the province's SOC: summarised under a flood, sent at alert priority."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.audit import MAX_KEYS, Auditor
from edge_agent.contract import Envelope, Kind, parse_iso
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
from tests.sync.schema import validate

pytestmark = pytest.mark.asyncio

BASE = f"{PREFIX}/{DISTRICT}/{NODE}"


@contextlib.asynccontextmanager
async def running(auditor: Auditor) -> AsyncIterator[Auditor]:
    async with auditor:
        task = asyncio.create_task(auditor.run())
        try:
            yield auditor
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_flood_becomes_one_event_per_window_with_its_count() -> None:
    events: list[dict[str, Any]] = []

    async def sink(data: dict[str, Any], ts: float) -> None:
        events.append(data)

    async with running(Auditor(sink, window_s=0.3)) as auditor:
        auditor.record("command_rejected", "bad_signature", source="c-1", detail="ping: forged")
        await eventually(lambda: len(events) == 1)  # the first one goes out at once
        for i in range(99):
            auditor.record("command_rejected", "bad_signature", source="c-1", detail=f"n{i}")
        auditor.record("login_failed", "bad_password", source="192.0.2.7")
        await eventually(lambda: len(events) == 3)  # one summary, one login
        await asyncio.sleep(0.7)  # two more windows: nothing new, nothing sent
    assert len(events) == 3
    first, login, summary = events[0], events[1], events[2]
    assert first["count"] == 1 and first["detail"] == "ping: forged"
    assert login == {**login, "event": "login_failed", "source": "192.0.2.7", "count": 1}
    assert summary["event"] == "command_rejected" and summary["count"] == 99
    assert summary["detail"] == "n98" and parse_iso(summary["first"]) <= parse_iso(summary["last"])
    for data in events:
        validate("audit", data)


async def test_many_sources_share_one_summary_and_bad_events_are_bugs() -> None:
    events: list[dict[str, Any]] = []

    async def sink(data: dict[str, Any], ts: float) -> None:
        events.append(data)

    async with running(Auditor(sink, window_s=60)) as auditor:
        for i in range(MAX_KEYS + 50):
            auditor.record("command_rejected", "bad_json", source=f"c-{i}" + "x" * 500)
        with pytest.raises(ValueError):
            auditor.record("made_up", "x")
        await eventually(lambda: len(events) == MAX_KEYS + 1)
    # Leaving flushes what was still being counted.
    assert len(events) == MAX_KEYS + 2
    assert events[-1]["source"] == "*" and events[-2]["source"] == "*"
    assert sum(e["count"] for e in events) == MAX_KEYS + 50
    assert all(e["source"] is None or len(e["source"]) <= 128 for e in events)


async def test_rejected_commands_reach_the_ioc_as_audit_events(
    broker: Broker, tmp_path: Path
) -> None:
    (tmp_path / "keys").mkdir()
    from edge_agent.sync.signing import generate_keypair

    _private, public = generate_keypair()
    (tmp_path / "keys" / "ioc.pub").write_bytes(public)
    config = mqtt_config(broker, commands={"public_keys": [tmp_path / "keys" / "ioc.pub"]})

    async with open_outbox(tmp_path) as outbox:

        async def sink(data: dict[str, Any], ts: float) -> None:
            await outbox.put(Kind.AUDIT, data, stream="audit", ts=ts)

        async with (
            running(Auditor(sink, window_s=0.5)) as auditor,
            running_sync(config, outbox, auditor=auditor),
        ):
            with Peer(broker, "ioc") as ioc:
                await ioc.subscribe(f"{BASE}/data/audit")
                await ioc.subscribe(f"{BASE}/status")
                await eventually(lambda: any(m.topic.endswith("/status") for m in ioc.messages))
                with Peer(broker, "attacker") as attacker:
                    for _ in range(30):
                        await attacker.publish(
                            f"{BASE}/cmd/ping",
                            b"{not json",
                            user_properties=[("client_id", "evil-7")],
                        )
                audits = lambda: [  # noqa: E731
                    Envelope.decode(m.payload)
                    for m in ioc.messages
                    if m.topic.endswith("/data/audit")
                ]
                await eventually(lambda: sum(e.data["count"] for e in audits()) == 30)
    envelopes = audits()
    assert len(envelopes) == 2  # at once, then one summary
    for envelope in envelopes:
        assert envelope.kind == "audit"
        assert envelope.data["event"] == "command_rejected" and envelope.data["code"] == "bad_json"
        assert envelope.data["source"] == "evil-7"
        validate("envelope", json.loads(envelope.encode()))
