"""The health model: reasons as codes, a verdict that weighs who is unwell, stalls that
clear, and a watchdog that rests on progress (a wedged outbox writer stops it)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from edge_agent.app import watchdog
from edge_agent.backoff import Backoff
from edge_agent.config import OutboxConfig
from edge_agent.contract import Kind
from edge_agent.health import HealthRegistry, Role, State, reason
from edge_agent.notify import Notifier
from edge_agent.outbox import Outbox


def node() -> HealthRegistry:
    registry = HealthRegistry(link_unhealthy_after_s=60.0)
    for name, kind, role in (
        ("outbox", "outbox", Role.CORE),
        ("sync", "sync", Role.LINK),
        ("sensor:a", "sensor", Role.SOURCE),
        ("sensor:b", "sensor", Role.SOURCE),
        ("camera:gate", "camera", Role.SOURCE),
        ("camera:street", "camera", Role.SOURCE),
        ("web", "web", Role.SUPPORT),
    ):
        registry.register(name, kind=kind, role=role).set_state(State.OK)
    return registry


def entry(registry: HealthRegistry, name: str):  # type: ignore[no-untyped-def]
    found = registry.get(name)
    assert found is not None
    return found


def codes(registry: HealthRegistry) -> dict[str, str]:
    return {f.reason.code: f.severity.value for f in registry.verdict().findings}


def test_everything_ok_is_a_healthy_verdict_without_reasons() -> None:
    registry = node()
    verdict = registry.verdict()
    assert verdict.state is State.OK
    assert verdict.findings == ()


def test_one_camera_or_one_sensor_down_degrades_but_all_sensors_down_fails() -> None:
    registry = node()
    entry(registry, "camera:gate").set_state(
        State.FAILING, reason("camera_offline", "offline: timeout", detail="timeout")
    )
    assert registry.verdict().state is State.DEGRADED
    assert codes(registry) == {"camera_offline": "degraded"}
    entry(registry, "sensor:a").set_state(State.FAILING, reason("no_answer", "no answer"))
    assert registry.verdict().state is State.DEGRADED
    # Every camera down: no frame reaches the node any more.
    entry(registry, "camera:street").set_state(State.FAILING, reason("camera_offline", "off"))
    assert codes(registry)["all_cameras_down"] == "failing"
    assert registry.verdict().state is State.FAILING
    entry(registry, "camera:street").set_state(State.OK)
    assert registry.verdict().state is State.DEGRADED
    entry(registry, "sensor:b").set_state(State.FAILING, reason("no_answer", "no answer"))
    assert codes(registry)["all_sensors_down"] == "failing"
    assert registry.verdict().state is State.FAILING


def test_only_the_outbox_failing_fails_the_node_on_its_own() -> None:
    registry = node()
    entry(registry, "web").set_state(State.FAILING, reason("x", "x"))
    assert registry.verdict().state is State.DEGRADED
    entry(registry, "outbox").set_state(State.FAILING, reason("database_corrupt", "corrupt"))
    verdict = registry.verdict()
    assert verdict.state is State.FAILING
    # The most serious reason comes first, with its code and component for the page.
    first = verdict.findings[0].to_dict()
    assert first["code"] == "database_corrupt"
    assert first["component"] == "outbox"
    assert first["severity"] == "failing"


def test_the_link_down_degrades_then_fails_after_the_bound() -> None:
    registry = node()
    sync = entry(registry, "sync")
    sync.set_state(State.DEGRADED, reason("broker_unreachable", "broker unreachable"))
    assert codes(registry) == {"broker_unreachable": "degraded"}
    later = time.time() + 61
    findings = registry.verdict(now_wall=later).findings
    assert [(f.reason.code, f.severity) for f in findings] == [
        ("broker_unreachable", State.FAILING)
    ]
    sync.set_state(State.OK)
    assert registry.verdict(now_wall=later).state is State.OK


def test_a_broken_progress_promise_fails_and_clears_when_progress_resumes() -> None:
    registry = node()
    outbox = entry(registry, "outbox")
    outbox.expect_progress(0.01)
    outbox.progress()
    assert registry.stuck() == []
    time_out = time.monotonic() + 5
    while not registry.stuck() and time.monotonic() < time_out:
        time.sleep(0.005)
    assert registry.stuck() == ["outbox"]
    assert codes(registry) == {"stalled": "failing"}
    outbox.progress()
    assert registry.stuck() == []
    assert registry.verdict().state is State.OK
    outbox.expect_progress(None)
    assert not outbox.stalled(time.monotonic() + 100)


def test_stopped_components_owe_nothing() -> None:
    registry = node()
    camera = entry(registry, "camera:gate")
    camera.beat(0.001)
    camera.set_state(State.STOPPED)
    assert not registry.stuck()


def test_backoff_is_capped_jittered_and_resets() -> None:
    backoff = Backoff(1.0, 8.0, jitter=0.5, rand=lambda: 1.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.peek() == 1.0
    no_jitter = Backoff(0.5, 2.0, jitter=0.5, rand=lambda: 0.0)
    assert [no_jitter.next() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="base <= cap"):
        Backoff(2.0, 1.0)


@pytest.mark.asyncio
async def test_watchdog_stops_while_the_outbox_writer_is_wedged_and_resumes(
    tmp_path: Path,
) -> None:
    """Another process holds the database's write lock, so the writer thread sits in
    SQLite's busy wait (5 s a try) instead of turning. The watchdog must stop while it is
    stuck and start again once it turns, with a STATUS line for each change."""
    address = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(address))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def next_message() -> str:
        return (await loop.sock_recv(sock, 4096)).decode()

    registry = HealthRegistry()
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(
        path,
        node="n1",
        config=OutboxConfig(writer_stall_s=1.0),
        health=registry.register("outbox", kind="outbox", role=Role.CORE),
    )
    try:
        async with outbox, asyncio.timeout(60):
            tasks = [
                asyncio.create_task(outbox.run()),
                asyncio.create_task(watchdog(registry, Notifier(str(address)), 0.05)),
            ]
            assert await next_message() == "WATCHDOG=1"
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            put = asyncio.create_task(outbox.put(Kind.READING, {"i": 1}, stream="s"))
            message = await next_message()
            while message == "WATCHDOG=1":
                message = await next_message()
            assert message == "STATUS=watchdog withheld: no progress from outbox"
            assert registry.verdict().state is State.FAILING
            blocker.execute("ROLLBACK")
            blocker.close()
            # No WATCHDOG=1 while withheld: the next message is the recovery.
            assert await next_message() == "STATUS=running"
            assert await next_message() == "WATCHDOG=1"
            assert await put >= 1
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        sock.close()
