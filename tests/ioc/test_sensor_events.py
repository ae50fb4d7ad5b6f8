"""A Modbus device unplugged and plugged back in, seen at the province: the agent's `sensor`
state events and the coverage gap reach the receiver's store, so the IOC knows a dead
device from a quiet one. Real parts: a pymodbus TCP server, the agent and the receiver as
processes, a mosquitto broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.contract import parse_iso
from tests.conftest import Broker, agent_command, agent_env, stop_process
from tests.ioc.processes import ReceiverProcess
from tests.sensors.test_modbus import UNIT, TcpDevice
from tests.sync.schema import validate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def sensor_events(db: Path, node: str) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT data FROM events WHERE node = ? AND kind = 'sensor' ORDER BY seq",
                (node,),
            ).fetchall()
    except sqlite3.OperationalError:  # the receiver has not created its tables yet
        return []
    return [json.loads(data) for (data,) in rows]


async def until(check: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    """Poll a condition a round trip through the broker makes true; the bound only ends a
    broken run."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not seen at the receiver"
        await asyncio.sleep(0.2)


@pytest.mark.asyncio
async def test_a_modbus_device_unplugged_and_replugged_reaches_the_receiver(
    broker: Broker, tmp_path: Path
) -> None:
    device = TcpDevice()
    await device.start()
    db = tmp_path / "ioc.sqlite3"
    receiver = ReceiverProcess(broker.port, tmp_path, db=db)
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f"""
[node]
id = "node-mb"
district = "d1"
[paths]
state_dir = "{tmp_path / "state"}"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
keepalive_s = 5
[[sensors]]
kind = "modbus"
name = "mb-1"
transport = "tcp"
host = "127.0.0.1"
port = {device.port}
unit_id = {UNIT}
interval_s = 0.2
timeout_s = 1.0
backoff_max_s = 0.5
failing_after = 2
[[sensors.registers]]
quantity = "temperature"
unit = "Cel"
address = 6
type = "float32"
"""
    )

    def start_agent() -> subprocess.Popen[bytes]:
        with (tmp_path / "agent.log").open("wb") as log:
            return subprocess.Popen(
                agent_command("run", "--config", str(config)),
                env=agent_env(mqtt=True, EDGE_AGENT_WEB__PORT="0"),
                stdout=log,
                stderr=log,
            )

    agent = await asyncio.to_thread(start_agent)

    def states() -> list[str]:
        return [str(e["state"]) for e in sensor_events(db, "node-mb") if e.get("event") == "state"]

    def gaps() -> list[dict[str, Any]]:
        return [e for e in sensor_events(db, "node-mb") if e.get("event") == "coverage_gap"]

    try:
        await asyncio.to_thread(receiver.start)
        await until(receiver.subscribed, "receiver subscribed")
        await until(lambda: states()[-1:] == ["ok"], "the device read")
        unplugged = time.time()
        await device.stop()
        await until(lambda: states()[-1:] == ["failing"], "the device failing")
        replugged = time.time()
        await device.start()
        await until(lambda: states()[-1:] == ["ok"] and bool(gaps()), "the device back")
    finally:
        await asyncio.to_thread(stop_process, agent)
        await asyncio.to_thread(receiver.stop)
        await device.stop()
    events = sensor_events(db, "node-mb")
    assert [s for s in states() if s != "degraded"] == ["ok", "failing", "ok"], states()
    failing = next(e for e in events if e.get("state") == "failing")
    assert failing["sensor"] == "mb-1"
    assert failing["code"] in ("no_answer", "read_failed"), failing
    (gap,) = gaps()
    start, end = parse_iso(str(gap["from"])), parse_iso(str(gap["to"]))
    assert start < end and float(gap["duration_s"]) == pytest.approx(end - start, abs=0.01)
    # The gap is the time the device was gone: from its first failed read after it was
    # unplugged to the first reading after it was plugged back in.
    assert unplugged - 0.05 <= start < replugged <= end + 0.05, (gap, unplugged, replugged)
    for data in events:
        validate("sensor", data)
    # No reading inside the gap, and readings again from its end on.
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        times = [
            parse_iso(str(ts))
            for (ts,) in conn.execute(
                "SELECT ts FROM readings WHERE node = 'node-mb' AND sensor = 'mb-1'"
            )
        ]
    assert not [t for t in times if start < t < end]
    assert max(times) >= end
