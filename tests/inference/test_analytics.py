"""Traffic analytics on scripted tracks: classes, movements, clock bins with coverage, speed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.config import CameraConfig
from edge_agent.contract import Kind, parse_iso
from edge_agent.inference.analytics import TrafficAnalytics
from edge_agent.inference.classes import ClassFilter, detector_floors
from edge_agent.inference.detector import Detection
from edge_agent.inference.pipeline import FrameAnalyzer

from .scripted import Script, box_at, line_path

NORTH = {"name": "north", "points": [(0.3, 0.2), (0.7, 0.2)], "directions": ["in", "out"]}
EAST = {"name": "east", "points": [(0.8, 0.3), (0.8, 0.7)], "directions": ["in", "out"]}
NORTH_EAST = {
    "name": "north_east",
    "entry": "north",
    "entry_direction": "in",
    "exit": "east",
    "exit_direction": "out",
}
T0 = datetime(2026, 1, 5, 1, 0, tzinfo=UTC).timestamp()  # 08:00 in Hanoi


def camera(**changes: Any) -> CameraConfig:
    base: dict[str, Any] = {"name": "cam", "source": "x", "fps": 5, "count_interval_s": 900}
    return CameraConfig(**{**base, **changes})


def counts(events: list[tuple[Kind, dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    return [d for k, d in events if k is Kind.COUNT and key in d]


# --- classes ----------------------------------------------------------------------------


def det(label: str, score: float = 0.9, x: float = 100) -> Detection:
    return Detection(0, label, score, (x, 100, x + 40, 200))


def test_road_camera_drops_dogs_sheep_and_skis_and_groups_two_wheelers() -> None:
    keep = ClassFilter.from_config(camera())
    found = keep.apply([det("dog"), det("sheep"), det("skis"), det("motorcycle"), det("bicycle")])
    assert [d.label for d in found] == ["two_wheeler", "two_wheeler"]


def test_analyzer_neither_tracks_nor_counts_labels_outside_the_allow_list() -> None:
    # The demo clip used to count dogs and frisbees on a street camera.
    seen = [det("dog", x=100), det("frisbee", x=300), det("person", x=500)]
    analyzer = FrameAnalyzer(camera(), lambda image: seen, gate=False)
    image = np.zeros((1000, 1000, 3), np.uint8)
    for step in range(3):
        result = analyzer.analyse(image, T0 + step)
    assert {t.label for t in result.tracks} == {"person"}
    (zone,) = counts(analyzer.finish(T0 + 3), "zone")
    assert zone["objects"] == {"person": 1}


def test_per_class_thresholds_and_the_detector_floor() -> None:
    keep = ClassFilter.from_config(camera())
    found = keep.apply([det("motorcycle", 0.32), det("car", 0.32), det("car", 0.45)])
    assert [(d.label, d.score) for d in found] == [("two_wheeler", 0.32), ("car", 0.45)]
    labels = ["person", "bicycle", "car", "motorcycle", "dog"]
    floors = detector_floors([camera()], labels, 0.35)
    assert floors == {"bicycle": 0.30, "motorcycle": 0.30}


def test_all_and_explicit_class_lists() -> None:
    assert [
        d.label for d in ClassFilter.from_config(camera(classes="all")).apply([det("dog")])
    ] == ["dog"]
    only_cars = ClassFilter.from_config(camera(classes=["car"]))
    assert [d.label for d in only_cars.apply([det("car"), det("bus")])] == ["car"]


# --- movements --------------------------------------------------------------------------


def intersection(*movements: dict[str, Any]) -> Script:
    config = camera(lines=[NORTH, EAST], movements=list(movements))
    return Script(TrafficAnalytics(config))


def test_movement_counted_per_class_in_its_bin_with_zeros() -> None:
    script = intersection(NORTH_EAST)
    right_turn = line_path((0.5, 0.1), (0.5, 0.5), 4) + line_path((0.5, 0.5), (0.9, 0.5), 4)[1:]
    script.walk(T0, 1.0, {1: ("two_wheeler", right_turn), 2: ("car", right_turn)})
    script.walk(T0 + 20, 1.0, {3: ("two_wheeler", right_turn)})
    (movements,) = counts(script.analytics.finish(T0 + 900), "movements")
    assert movements["movements"] == {
        "north_east": {"two_wheeler": 2, "car": 1, "bus": 0, "truck": 0, "person": 0}
    }
    assert movements["from"] == "2026-01-05T01:00:00.000Z" and movements["interval_s"] == 900


def test_u_turn_counts_nothing_unless_configured() -> None:
    u_turn = line_path((0.5, 0.1), (0.5, 0.4), 3) + line_path((0.5, 0.4), (0.5, 0.1), 3)[1:]
    script = intersection(NORTH_EAST)
    script.walk(T0, 1.0, {1: ("car", u_turn)})
    (plain,) = counts(script.analytics.finish(T0 + 900), "movements")
    assert plain["movements"]["north_east"]["car"] == 0
    u = {"name": "north_u", "entry": "north", "entry_direction": "in", "exit": "north"}
    script = intersection(NORTH_EAST, u)
    script.walk(T0, 1.0, {1: ("car", u_turn)})
    (turned,) = counts(script.analytics.finish(T0 + 900), "movements")
    assert turned["movements"]["north_u"]["car"] == 1
    assert turned["movements"]["north_east"]["car"] == 0


def test_zone_to_zone_movement() -> None:
    zones = [
        {"name": "left", "polygon": [(0, 0), (0.3, 0), (0.3, 1), (0, 1)]},
        {"name": "right", "polygon": [(0.7, 0), (1, 0), (1, 1), (0.7, 1)]},
    ]
    config = camera(zones=zones, movements=[{"name": "l_r", "entry": "left", "exit": "right"}])
    script = Script(TrafficAnalytics(config))
    script.walk(T0, 1.0, {1: ("person", line_path((0.1, 0.5), (0.9, 0.5), 8))})
    (movements,) = counts(script.analytics.finish(T0 + 60), "movements")
    assert movements["movements"]["l_r"]["person"] == 1


def test_movement_names_must_exist() -> None:
    with pytest.raises(ValidationError, match="no zone or line named 'south'"):
        camera(lines=[NORTH], movements=[{"name": "m", "entry": "north", "exit": "south"}])


# --- bins and coverage ------------------------------------------------------------------


def test_bins_align_to_the_local_hour_and_are_stamped_in_utc() -> None:
    # India is UTC+05:30: its hours begin at half past in UTC.
    config = camera(count_interval_s=3600, timezone="Asia/Kolkata", zones=[])
    analytics = TrafficAnalytics(config)
    start = datetime(2026, 1, 5, 10, 10, tzinfo=UTC).timestamp()
    assert analytics.clock.start_of(start) == datetime(2026, 1, 5, 9, 30, tzinfo=UTC).timestamp()
    hanoi = TrafficAnalytics(camera()).clock
    assert hanoi.start_of(T0 + 17 * 60) == T0 + 15 * 60


def test_every_bin_is_published_zeros_included() -> None:
    script = Script(TrafficAnalytics(camera(count_interval_s=60, lines=[NORTH])))
    for second in range(0, 181, 2):
        script.frame(T0 + second, {})
    zone_bins = counts(script.events, "zone")
    line_bins = counts(script.events, "line")
    assert [b["from"][11:19] for b in zone_bins] == ["01:00:00", "01:01:00", "01:02:00"]
    assert all(b["objects"] == {} and b["coverage"] == 1.0 for b in zone_bins)
    assert [b["crossings"] for b in line_bins] == [{"in": {}, "out": {}}] * 3


def test_a_bin_covering_an_outage_carries_its_coverage() -> None:
    script = Script(TrafficAnalytics(camera(count_interval_s=60, lines=[NORTH])))
    for second in range(0, 31):
        script.frame(T0 + second, {})
    # The camera goes offline at +30 s; the pipeline keeps ticking the clock meanwhile.
    closed = script.analytics.tick(T0 + 75)
    (first,) = counts(closed, "zone")
    assert first["from"].endswith("01:00:00.000Z") and first["coverage"] == 0.5
    for second in range(90, 181):
        script.frame(T0 + second, {})
    second_bin, third_bin = counts(script.events, "zone")
    assert second_bin["coverage"] == 0.5 and third_bin["coverage"] == 1.0
    assert counts(script.events, "line")[0]["coverage"] == 0.5


def test_no_detector_means_no_coverage_but_bins_still_close() -> None:
    analyzer = FrameAnalyzer(camera(count_interval_s=60), None)
    image = np.zeros((100, 100, 3), np.uint8)
    events = []
    for second in range(0, 140, 5):
        events += analyzer.analyse(image, T0 + second).events
    zones = counts(events, "zone")
    assert len(zones) == 2 and {z["coverage"] for z in zones} == {0.0}


def test_interval_must_divide_a_day() -> None:
    with pytest.raises(ValidationError, match="dividing 86400"):
        camera(count_interval_s=7)


# --- speed ------------------------------------------------------------------------------


def test_speed_mean_and_85th_percentile_per_class() -> None:
    a = {"name": "a", "points": [(0, 0.3), (1, 0.3)], "directions": ["down", "up"]}
    b = {"name": "b", "points": [(0, 0.7), (1, 0.7)], "directions": ["down", "up"]}
    stretch = {"name": "ab", "lines": ["a", "b"], "distance_m": 20}
    script = Script(TrafficAnalytics(camera(lines=[a, b], speed=[stretch], zones=[])))
    # From y 0.1 to 0.9 in 8 steps: line a crossed at step 2, line b at step 6.
    for track_id, dt in enumerate([0.5, 0.5, 1.0, 1.0, 2.0], start=1):
        script.walk(
            T0 + track_id * 30, dt, {track_id: ("car", line_path((0.5, 0.1), (0.5, 0.9), 8))}
        )
    (speed,) = counts(script.analytics.finish(T0 + 900), "speed")
    # 20 m in 4 steps: 2 s (36 km/h), 4 s (18 km/h) or 8 s (9 km/h).
    assert speed["speeds"] == {"car": {"count": 5, "mean_kmh": 23.4, "p85_kmh": 36.0}}
    assert speed["distance_m"] == 20


# --- the status page's summary ----------------------------------------------------------


def test_today_counts_and_last_rule_events_for_the_page() -> None:
    config = camera(lines=[NORTH, EAST], movements=[NORTH_EAST])
    # Steps short enough for the real tracker to keep its id.
    right_turn = line_path((0.5, 0.1), (0.5, 0.5), 8) + line_path((0.5, 0.5), (0.9, 0.5), 8)[1:]
    frames = [[Detection(3, "motorcycle", 0.9, box_at(p))] for p in right_turn]
    index = iter(range(len(frames)))
    analyzer = FrameAnalyzer(config, lambda image: frames[next(index)], gate=False)
    image = np.zeros((1000, 1000, 3), np.uint8)
    for step in range(len(frames)):
        analyzer.analyse(image, T0 + step)
    summary = analyzer.summary()
    assert summary["today"] == {"north_east": {"two_wheeler": 1}}
    assert summary["today_lines"] == {
        "north": {"in": {"two_wheeler": 1}},
        "east": {"out": {"two_wheeler": 1}},
    }
    assert summary["today_date"] == "2026-01-05"
    assert summary["last_rule_events"] == []
    assert parse_iso("2026-01-05T01:00:00.000Z") == T0
