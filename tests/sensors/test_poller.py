"""The poller: failures stay inside the sensor, hung reads never pile up, quality and windows."""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path

import pytest

from edge_agent.config.outbox import OutboxConfig
from edge_agent.config.sensors import Range, SimulatedSensor
from edge_agent.errors import SensorError
from edge_agent.health import ComponentHealth, HealthRegistry, State
from edge_agent.outbox import Outbox
from edge_agent.sensors.base import Poller, Sample
from edge_agent.sensors.quality import Aggregator, Checked, Validator
from edge_agent.sensors.registry import build_driver

from .conftest import Recorder, running, wait_state


class BenchDevice:
    """A fake at the hardware edge: a device the test can break in each way a real one does."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.value = 21.0
        self.release = threading.Event()
        self.calls = 0
        self.active = 0
        self.most_active = 0
        self.closed = False
        self._lock = threading.Lock()

    def read(self) -> list[Sample]:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if self.mode == "raise":
                raise SensorError("bus error on RS-485")
            if self.mode == "crash":
                raise ZeroDivisionError("driver bug")
            if self.mode == "hang":
                self.release.wait()
            if self.mode == "nan":
                return [Sample("temperature", math.nan, "Cel")]
            self.value += 0.5
            return [Sample("temperature", self.value, "Cel")]
        finally:
            with self._lock:
                self.active -= 1

    def close(self) -> None:
        self.closed = True


FAST = {"interval_s": 0.02, "timeout_s": 0.3, "backoff_max_s": 0.05, "failing_after": 2}


def sensor(name: str, **extra: object) -> SimulatedSensor:
    return SimulatedSensor(kind="simulated", name=name, **{**FAST, **extra})  # type: ignore[arg-type]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("raise", "bus error on RS-485"),
        ("crash", "ZeroDivisionError: driver bug"),
        ("nan", "temperature is nan"),
        ("hang", "no answer within 0.3 s"),
    ],
)
async def test_a_broken_sensor_fails_alone_and_recovers(
    tmp_path: Path, recorder: Recorder, mode: str, reason: str
) -> None:
    device = BenchDevice()
    registry = HealthRegistry()
    broken = registry.register("sensor:broken")
    healthy = registry.register("sensor:healthy")
    other = sensor("healthy", seed=1)
    pollers = [
        Poller(sensor("broken"), device, sink=recorder, health=broken),
        Poller(other, build_driver(other, state_dir=tmp_path), sink=recorder, health=healthy),
    ]
    async with running(pollers[0]), running(pollers[1]):
        await wait_state(broken, State.OK)
        device.mode = mode
        await wait_state(broken, State.FAILING)
        assert reason in broken.last_error
        assert broken.snapshot()["detail"] == broken.last_error
        # the other sensor keeps reading while this one is failing, and both keep beating
        before = healthy.counters.get("readings", 0)
        beat = broken.last_beat
        await recorder.wait_for(lambda: healthy.counters.get("readings", 0) > before + 12)
        assert healthy.state is State.OK
        assert broken.last_beat != beat
        assert registry.progressing()
        if mode == "hang":
            # one read is hung; nothing was queued behind it
            calls_while_hung = device.calls
            await recorder.wait_for(lambda: broken.counters.get("skipped", 0) >= 2)
            assert device.calls == calls_while_hung
            assert "not starting another" in broken.last_error
        assert device.most_active == 1
        device.mode = "ok"
        device.release.set()
        await wait_state(broken, State.OK)
    assert device.closed
    temps = [r for r in recorder.readings("temperature") if r["sensor"] == "broken"]
    assert temps[-1]["quality"] == "ok" and temps[-1]["unit"] == "Cel"
    if mode == "nan":
        bad = [r for r in temps if r["quality"] == "bad"]
        assert bad and bad[0]["value"] is None and bad[0]["raw"] == "nan"
    assert broken.state is State.STOPPED


@pytest.mark.asyncio
async def test_shutdown_does_not_wait_for_a_hung_read(recorder: Recorder) -> None:
    device = BenchDevice()
    device.mode = "hang"
    health = ComponentHealth("sensor:stuck")
    try:
        async with running(Poller(sensor("stuck"), device, sink=recorder, health=health)):
            await wait_state(health, State.FAILING)
        assert health.state is State.STOPPED
    finally:
        device.release.set()


def test_validator_marks_bad_and_suspect() -> None:
    validator = Validator({"pm2_5": Range(min=0, max=500)}, stuck_after_s=10.0)
    assert validator.check("pm2_5", 600.0, "ug/m3", now=0.0) == Checked(
        "pm2_5", None, "ug/m3", "bad", 600.0, "pm2_5 600 outside 0..500"
    )
    assert validator.check("humidity", 101.0, "%", now=0.0).quality == "bad"  # built-in range
    assert validator.check("temperature", math.inf, "Cel", now=0.0).quality == "bad"
    assert validator.check("custom", 1e9, "1", now=0.0).quality == "ok"  # no range known
    assert validator.check("noise", 55.0, "dB", now=0.0).quality == "ok"
    assert validator.check("noise", 55.0, "dB", now=9.0).quality == "ok"
    stuck = validator.check("noise", 55.0, "dB", now=10.5)
    assert stuck.quality == "suspect" and stuck.value == 55.0
    assert "unchanged for 10 s" in stuck.reason
    assert validator.check("noise", 56.0, "dB", now=11.0).quality == "ok"


def test_aggregator_windows() -> None:
    agg = Aggregator(60.0)
    for ts, value in ((120.5, 10.0), (130.0, 20.0), (170.0, 30.0)):
        agg.add(Checked("pm2_5", value, "ug/m3", "ok"), ts)
    agg.add(Checked("pm2_5", None, "ug/m3", "bad", math.nan), 171.0)
    agg.add(Checked("noise", None, "dB", "bad", 300.0), 171.0)
    assert agg.take_due(179.9) == []
    due = dict((d["quantity"], (ts, d)) for ts, d in agg.take_due(180.0))
    ts, pm = due["pm2_5"]
    assert ts == 180.0
    assert pm["value"] == 20.0 and pm["quality"] == "ok" and pm["unit"] == "ug/m3"
    assert pm["stats"] == {
        "count": 3,
        "window_s": 60.0,
        "bad": 1,
        "min": 10.0,
        "mean": 20.0,
        "max": 30.0,
    }
    assert due["noise"][1]["quality"] == "bad" and due["noise"][1]["raw"] == 300.0
    assert agg.take_due(1000.0) == []


@pytest.mark.asyncio
async def test_aggregated_readings_into_a_real_outbox(tmp_path: Path) -> None:
    outbox = Outbox(
        tmp_path / "outbox.sqlite3",
        node="n1",
        config=OutboxConfig(),
        health=ComponentHealth("outbox"),
    )
    config = sensor("agg", aggregate_s=0.2, ranges={"temperature": Range(min=0, max=1000)})
    device = BenchDevice()
    health = ComponentHealth("sensor:agg")
    written: list[dict[str, object]] = []
    seqs: list[int] = []

    async def to_outbox(kind: object, data: dict[str, object], stream: str, ts: float) -> None:
        seq = await outbox.put(kind, data, stream=stream, ts=ts)  # type: ignore[arg-type]
        if kind == "reading":
            seqs.append(seq)
            written.append(data)

    async with outbox, running(Poller(config, device, sink=to_outbox, health=health)):
        async with asyncio.timeout(10):
            while True:
                if len(written) >= 3:
                    break
                await asyncio.sleep(0.05)
    stats = [d["stats"] for d in written]
    assert all(s["min"] <= s["mean"] <= s["max"] for s in stats)  # type: ignore[index]
    # every read landed in exactly one window (the last one flushed at shutdown)
    assert sum(s["count"] for s in stats) == device.calls  # type: ignore[index,misc]
    assert seqs == sorted(set(seqs)) and len(seqs) == len(written)  # each one committed


@pytest.mark.asyncio
async def test_unplugged_and_replugged_sensor_tells_the_ioc_with_a_coverage_gap(
    recorder: Recorder,
) -> None:
    """State changes go upstream as `sensor` events, and the time without readings as a
    coverage gap, so the IOC knows a dead device from a quiet one."""
    from edge_agent.contract import Kind, parse_iso
    from tests.sync.schema import validate

    device = BenchDevice()
    config = SimulatedSensor(
        kind="simulated", name="aq-1", interval_s=0.02, backoff_max_s=0.05, failing_after=2
    )
    health = ComponentHealth("sensor:aq-1")

    def sensor_events() -> list[dict[str, object]]:
        return [d for k, d, _, _ in recorder.events if k is Kind.SENSOR]

    def states() -> list[object]:
        return [d["state"] for d in sensor_events() if d["event"] == "state"]

    async with running(Poller(config, device, sink=recorder, health=health)):
        await recorder.wait_for(lambda: states() == ["ok"])
        device.mode = "raise"  # unplugged
        await recorder.wait_for(lambda: states()[-1:] == ["failing"])
        device.mode = "ok"  # plugged back in
        await recorder.wait_for(lambda: states()[-1:] == ["ok"])
        await recorder.wait_for(lambda: any(d["event"] == "coverage_gap" for d in sensor_events()))
    events = sensor_events()
    failing = next(d for d in events if d.get("state") == "failing")
    assert failing["code"] == "read_failed" and "RS-485" in str(failing["detail"])
    gap = next(d for d in events if d["event"] == "coverage_gap")
    assert float(gap["duration_s"]) > 0  # type: ignore[arg-type]
    assert parse_iso(str(gap["from"])) < parse_iso(str(gap["to"]))
    # No reading was taken inside the gap, and the one closing it is its end.
    reading_times = [ts for k, _, _, ts in recorder.events if k is Kind.READING]
    inside = [
        t for t in reading_times if parse_iso(str(gap["from"])) < t < parse_iso(str(gap["to"]))
    ]
    assert inside == []
    for data in events:
        validate("sensor", data)
