"""Zones, lines and counts over tracks: known paths, and people in vtest.avi."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import pytest

from edge_agent.config import CameraConfig
from edge_agent.contract import Kind
from edge_agent.inference.analytics import TrafficAnalytics
from edge_agent.inference.detector import Detection, Detector
from edge_agent.inference.pipeline import FrameAnalyzer
from edge_agent.inference.tracker import Tracker
from edge_agent.inference.zones import inside

W, H = 1000, 1000
LOWER_HALF = {"name": "lower", "polygon": [(0, 0.5), (1, 0.5), (1, 1), (0, 1)]}


def walker(y_feet: float, x: float = 500) -> Detection:
    return Detection(0, "person", 0.9, (x - 20, y_feet - 100, x + 20, y_feet))


def run(
    analytics: TrafficAnalytics,
    tracker: Tracker,
    path: list[float],
    t0: float = 0.0,
    x: float = 500,
) -> list[tuple[Kind, dict[str, Any]]]:
    events = []
    for step, y in enumerate(path):
        ts = t0 + step
        tracks = tracker.update([walker(y, x)], ts)
        events += analytics.update(tracks, ts, W, H).events
    return events


def test_entering_a_zone_is_reported_once_with_its_track() -> None:
    config = CameraConfig(name="c", source="x", zones=[LOWER_HALF], count_interval_s=60)
    analytics, tracker = TrafficAnalytics(config), Tracker(max_age_s=5)
    events = run(analytics, tracker, [350, 400, 450, 520, 570, 620, 670])
    detections = [d for k, d in events if k is Kind.DETECTION]
    assert len(detections) == 1
    assert detections[0]["zone"] == "lower" and detections[0]["label"] == "person"
    assert detections[0]["box"] == [480.0, 420.0, 520.0, 520.0]
    assert detections[0]["track_id"] == 1
    assert [k for k, _ in events].count(Kind.COUNT) == 0  # the interval has not ended


def test_reentry_within_cooldown_is_counted_not_reported() -> None:
    config = CameraConfig(
        name="c", source="x", zones=[LOWER_HALF], detection_cooldown_s=10, count_interval_s=60
    )
    analytics, tracker = TrafficAnalytics(config), Tracker(max_age_s=5)
    events = run(analytics, tracker, [450, 550, 450, 550, 450, 550])
    assert [k for k, _ in events].count(Kind.DETECTION) == 1
    count, later = analytics.finish(100.0)
    assert later[1]["from"] == "1970-01-01T00:01:00.000Z" and later[1]["objects"] == {}
    assert count[1]["objects"] == {"person": 1}
    assert count[1]["entries"] == {"person": 3}


def test_counts_per_interval_and_zero_counts() -> None:
    config = CameraConfig(name="c", source="x", zones=[LOWER_HALF], count_interval_s=10)
    analytics, tracker = TrafficAnalytics(config), Tracker(max_age_s=5)
    events = run(analytics, tracker, [600, 610, 620], t0=1000.0)
    events += analytics.update([], 1012.0, W, H).events  # the next bin: the first one closes
    counts = [d for k, d in events if k is Kind.COUNT]
    assert len(counts) == 1
    assert counts[0]["from"] == "1970-01-01T00:16:40.000Z"
    assert counts[0]["to"] == "1970-01-01T00:16:50.000Z"
    assert counts[0]["objects"] == {"person": 1}
    (empty,) = analytics.finish(1020.0)
    assert empty[1]["objects"] == {} and empty[1]["entries"] == {}


def test_class_filter() -> None:
    config = CameraConfig(name="c", source="x", zones=[{**LOWER_HALF, "classes": ["car"]}])
    analytics, tracker = TrafficAnalytics(config), Tracker(max_age_s=5)
    assert run(analytics, tracker, [600, 650, 700]) == []


def test_line_crossings_by_direction() -> None:
    line = {"name": "kerb", "points": [(0.2, 0.5), (0.8, 0.5)], "directions": ["down", "up"]}
    config = CameraConfig(name="c", source="x", lines=[line], count_interval_s=60)
    analytics = TrafficAnalytics(config)
    run(analytics, Tracker(max_age_s=5), [400, 450, 550, 600])  # down across
    run(analytics, Tracker(max_age_s=5), [600, 550, 450], t0=10)  # up across
    run(analytics, Tracker(max_age_s=5), [400, 450, 550, 600], t0=20, x=100)  # beside its end
    lines = [d for k, d in analytics.finish(60.0) if "line" in d]
    assert lines[0]["crossings"] == {"down": {"person": 1}, "up": {"person": 1}}


def test_whole_frame_is_the_zone_without_configured_zones() -> None:
    analytics = TrafficAnalytics(CameraConfig(name="c", source="x"))
    events = run(analytics, Tracker(max_age_s=5), [100, 120])
    assert [d["zone"] for k, d in events if k is Kind.DETECTION] == ["frame"]


def test_point_in_polygon() -> None:
    triangle = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    assert inside((0.2, 0.2), triangle)
    assert not inside((0.8, 0.8), triangle)


def test_people_counted_in_the_left_half_of_vtest(media_dir: Path, detector: Detector) -> None:
    left = {"name": "left", "polygon": [(0, 0), (0.5, 0), (0.5, 1), (0, 1)], "classes": ["person"]}
    config = CameraConfig(name="vtest", source="x", fps=2, zones=[left], count_interval_s=5)
    analyzer = FrameAnalyzer(config, detector.detect, gate=False)
    capture = cv2.VideoCapture(str(media_dir / "vtest.avi"))
    events: list[tuple[Kind, dict[str, Any]]] = []
    for index in range(100):
        ok, frame = capture.read()
        assert ok
        if index % 5 == 0:
            events += analyzer.analyse(frame, 1000.0 + index / 10).events
    capture.release()
    events += analyzer.finish(1010.0)
    detections = [d for k, d in events if k is Kind.DETECTION]
    assert detections
    for d in detections:
        feet_x = (d["box"][0] + d["box"][2]) / 2
        assert feet_x <= 0.5 * 768 + 1 and d["label"] == "person"
    counts = [d for k, d in events if k is Kind.COUNT]
    assert [c["from"][-10:] for c in counts] == ["16:40.000Z", "16:45.000Z"]
    assert sum(c["objects"].get("person", 0) for c in counts) >= 2


@pytest.mark.parametrize("bad", [[(0, 0), (1, 0)], [(0, 0), (1.5, 0), (1, 1)]])
def test_bad_polygons_are_config_errors(bad: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError, match=r"at least 3 points|outside 0\.\.1"):
        CameraConfig(name="c", source="x", zones=[{"name": "z", "polygon": bad}])
