"""The tracker on real detections from vtest.avi, and on boxes whose paths we know."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.inference.detector import Detection, Detector
from edge_agent.inference.tracker import Tracker, iou


def person(x: float, y: float, w: float = 40, h: float = 100, label: str = "person") -> Detection:
    return Detection(
        class_id=0 if label == "person" else 2, label=label, score=0.9, box=(x, y, x + w, y + h)
    )


@pytest.fixture(scope="module")
def walking(media_dir: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(media_dir / "vtest.avi"))
    frames = []
    for index in range(100):
        ok, frame = capture.read()
        assert ok
        if index % 5 == 0:
            frames.append(frame)
    capture.release()
    return frames


def test_people_in_vtest_keep_their_ids(walking: list[np.ndarray], detector: Detector) -> None:
    tracker = Tracker(max_age_s=2.0)
    detections = 0
    continued = 0
    previous: set[int] = set()
    confirmed: set[int] = set()
    for index, frame in enumerate(walking):  # 2 frames per second for 10 s
        people = [d for d in detector.detect(frame) if d.label == "person"]
        detections += len(people)
        live = tracker.update(people, index / 2)
        confirmed |= {t.id for t in live if t.confirmed}
        updated = {t.id for t in live if t.updated}
        continued += len(updated & previous)
        previous = updated
    tracks = len(confirmed)
    # About six people walk through these ten seconds; each keeps one id nearly throughout.
    assert 3 <= tracks <= 15
    assert detections >= 60
    assert continued >= 0.75 * (detections - len(previous))


def test_moving_box_keeps_its_id_and_classes_do_not_mix() -> None:
    tracker = Tracker(max_age_s=1.0)
    ids = []
    for step in range(5):
        # 30 px per update on a 40 px wide box: overlapping, then kept by distance.
        tracks = tracker.update([person(100 + 30 * step, 50), person(400, 50, label="car")], step)
        ids.append({t.label: t.id for t in tracks})
    assert all(i == ids[0] for i in ids)
    assert ids[0]["person"] != ids[0]["car"]
    assert sorted(t.label for t in tracker.tracks if t.confirmed) == ["car", "person"]


def test_far_jump_starts_a_new_track_and_old_ones_expire() -> None:
    tracker = Tracker(max_age_s=1.0)
    first = tracker.update([person(0, 0)], 0.0)[0].id
    jumped = tracker.update([person(500, 300)], 0.5)
    assert {t.id for t in jumped if t.updated} != {first}
    remaining = tracker.update([], 2.0)
    assert remaining == []


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
