"""Rules on scripted tracks: dwell, stopped, wrong way, crowd; one event per situation,
with a snapshot on the node that the `snapshot` command path can fetch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.app import Agent
from edge_agent.config import Settings
from edge_agent.contract import Kind
from edge_agent.inference.analytics import TrafficAnalytics
from edge_agent.inference.detector import Detection
from edge_agent.inference.pipeline import FrameAnalyzer
from edge_agent.inference.snapshots import SnapshotStore

from .scripted import Script, box_at, line_path
from .test_analytics import T0, camera

SQUARE = {"name": "square", "polygon": [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)]}
KERB = {"name": "kerb", "polygon": [(0.0, 0.6), (1.0, 0.6), (1.0, 1.0), (0.0, 1.0)]}
ONE_WAY = {
    "name": "one_way",
    "points": [(0.0, 0.5), (1.0, 0.5)],
    "directions": ["down", "up"],
    "allowed_direction": "down",
}


def script(**changes: Any) -> Script:
    return Script(TrafficAnalytics(camera(**changes)))


def test_dwell_fires_once_after_dwell_s() -> None:
    s = script(zones=[SQUARE], rules=[{"kind": "dwell", "zone": "square", "dwell_s": 30}])
    for second in range(0, 30):
        s.frame(T0 + second, {1: ("person", (0.5, 0.5))})
    assert s.of(Kind.DWELL) == []
    for second in range(30, 120):
        s.frame(T0 + second, {1: ("person", (0.5 + 0.001 * (second % 3), 0.5))})
    (event,) = s.of(Kind.DWELL)
    assert event["zone"] == "square" and event["track_id"] == 1 and event["dwell_s"] == 30.0
    assert event["since"] == "2026-01-05T01:00:00.000Z" and event["label"] == "person"


def test_dwell_ignores_vehicles_and_passers_by() -> None:
    s = script(zones=[SQUARE], rules=[{"kind": "dwell", "zone": "square", "dwell_s": 10}])
    s.walk(T0, 1.0, {1: ("person", line_path((0.1, 0.5), (0.9, 0.5), 8))})
    for second in range(20, 60):
        s.frame(T0 + second, {2: ("car", (0.5, 0.5))})
    assert s.of(Kind.DWELL) == []


def test_stopped_fires_after_stopped_s_and_not_before() -> None:
    rule = {"kind": "stopped", "zone": "kerb", "stopped_s": 60, "radius": 0.02}
    s = script(zones=[KERB], rules=[rule])
    s.walk(T0, 1.0, {7: ("car", line_path((0.5, 0.2), (0.5, 0.7), 5))})  # pulls in at +5 s
    for second in range(6, 65):
        jitter = 0.005 * (second % 2)  # the box wobbles, the car does not move
        s.frame(T0 + second, {7: ("car", (0.5 + jitter, 0.7))})
    assert s.of(Kind.STOPPED) == []  # 59 s still: not yet
    for second in range(65, 200):
        s.frame(T0 + second, {7: ("car", (0.5, 0.7))})
    (event,) = s.of(Kind.STOPPED)
    assert event["stopped_s"] == 60.0 and event["zone"] == "kerb" and event["track_id"] == 7
    assert event["since"] == "2026-01-05T01:00:05.000Z"
    assert event["box"] == [480.0, 600.0, 520.0, 700.0]


def test_slow_traffic_is_not_stopped() -> None:
    rule = {"kind": "stopped", "zone": "kerb", "stopped_s": 20, "radius": 0.02}
    s = script(zones=[KERB], rules=[rule])
    crawl = line_path((0.0, 0.8), (1.0, 0.8), 100)  # 0.01 per second for 100 s
    s.walk(T0, 1.0, {1: ("two_wheeler", crawl)})
    assert s.of(Kind.STOPPED) == []


def test_wrong_way_fires_once_per_track() -> None:
    s = script(lines=[ONE_WAY], zones=[])
    s.walk(T0, 1.0, {1: ("two_wheeler", line_path((0.5, 0.2), (0.5, 0.8), 6))})  # allowed
    assert s.of(Kind.WRONG_WAY) == []
    back_and_forth = line_path((0.5, 0.8), (0.5, 0.4), 4) + line_path((0.5, 0.4), (0.5, 0.6), 2)
    back_and_forth += line_path((0.5, 0.6), (0.5, 0.2), 4)
    s.walk(T0 + 10, 1.0, {2: ("two_wheeler", back_and_forth)})
    (event,) = s.of(Kind.WRONG_WAY)
    assert event["track_id"] == 2 and event["direction"] == "up"
    assert event["allowed_direction"] == "down" and event["line"] == "one_way"


def test_crowd_fires_once_while_it_lasts_and_again_after_cooldown() -> None:
    rule = {"kind": "crowd", "zone": "square", "max_people": 3, "for_s": 10, "cooldown_s": 60}
    s = script(zones=[SQUARE], rules=[rule])
    crowd = {i: ("person", (0.3 + 0.1 * i, 0.5)) for i in range(1, 5)}
    few = {i: ("person", (0.3 + 0.1 * i, 0.5)) for i in range(1, 3)}
    for second in range(0, 10):
        s.frame(T0 + second, crowd)
    assert s.of(Kind.CROWD) == []
    for second in range(10, 40):
        s.frame(T0 + second, crowd)
    (event,) = s.of(Kind.CROWD)
    assert event["people"] == 4 and event["max_people"] == 3 and event["for_s"] == 10.0
    for second in range(40, 50):
        s.frame(T0 + second, few)
    for second in range(50, 70):
        s.frame(T0 + second, crowd)
    assert len(s.of(Kind.CROWD)) == 1  # thinned out only 10 s after it fired: cool-down
    for second in range(70, 80):
        s.frame(T0 + second, few)
    for second in range(80, 95):
        s.frame(T0 + second, crowd)
    assert len(s.of(Kind.CROWD)) == 2


def test_a_parked_car_stays_tracked_while_the_motion_gate_rests(tmp_path: Path) -> None:
    # Nothing moves, so the gate runs the detector only every heartbeat; the car's track
    # must live on between them for `stopped` ever to fire.
    rule = {"kind": "stopped", "zone": "kerb", "stopped_s": 90, "radius": 0.02}
    config = camera(zones=[KERB], rules=[rule])
    calls = []

    def detect(image: np.ndarray) -> list[Detection]:
        calls.append(1)
        return [Detection(2, "car", 0.9, box_at((0.5, 0.7)))]

    store = SnapshotStore(tmp_path / "snaps", max_count=10, max_bytes=10_000_000)
    analyzer = FrameAnalyzer(config, detect, snapshots=store, gate=True)
    street = np.full((1000, 1000, 3), 90, np.uint8)
    events = []
    # Confirmed at the first heartbeat (30 s), stopped from then on: fires at 120 s.
    for step in range(0, 5 * 150):  # 150 s at 5 fps
        events += analyzer.analyse(street, T0 + step / 5).events
    stopped = [d for k, d in events if k is Kind.STOPPED]
    assert len(calls) < 30  # the gate really rested
    assert len(stopped) == 1 and stopped[0]["stopped_s"] >= 90
    assert (tmp_path / "snaps" / stopped[0]["snapshot"]).is_file()
    assert analyzer.summary()["last_rule_events"][-1]["kind"] == "stopped"


def test_rule_snapshots_are_fetched_through_the_snapshot_command_path(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "paths": {"state_dir": str(tmp_path / "var"), "model_dir": str(tmp_path)},
            "mqtt": {"enabled": False},
            "web": {"enabled": False},
            "sensors": [],
            "cameras": [{"name": "gate", "source": str(tmp_path / "clip.avi")}],
        }
    )
    agent = Agent(settings)
    frame = np.full((100, 100, 3), 200, np.uint8)
    (store, _plates) = agent.snapshot_stores["gate"]
    saved = store.save(frame, "1767574800000-dwell-3-square")
    assert saved is not None
    jpeg = asyncio.run(agent.camera_snapshot(f"gate/{saved.name}"))
    assert jpeg == saved.read_bytes() and jpeg[:2] == b"\xff\xd8"
    for bad in ("gate/../outbox.sqlite3", "gate/nope.jpg"):
        try:
            asyncio.run(agent.camera_snapshot(bad))
        except Exception as exc:
            assert "no kept snapshot" in str(exc)
        else:
            raise AssertionError(f"{bad} was served")
