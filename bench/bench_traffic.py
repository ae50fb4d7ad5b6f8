"""Traffic analytics benchmarks, each figure a ratio to a baseline measured in the same run.

  1. Analytics cost per frame: classes, tracker, zones, lines, movements, speed and rules
     on vtest.avi analysed at 5 fps, against the detector's own time on the same frames.
     Aim: <= 5 % of the detector.
  2. Plate reading: ms per vehicle crop (text detection in the lower part of the box,
     recognition, validation), against bare rapidocr (its RapidOCR() on the same crop), when
     rapidocr is importable (it is not a dependency: pip install --no-deps
     rapidocr-onnxruntime==1.4.4 pyclipper shapely six to get the baseline).

Needs models/ (scripts/build-model, scripts/fetch-ocr-models) and media/ (scripts/fetch-media).
Usage: python bench/bench_traffic.py [--frames 400] [--crops 20] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.config import CameraConfig  # noqa: E402
from edge_agent.inference.analytics import TrafficAnalytics  # noqa: E402
from edge_agent.inference.classes import ClassFilter  # noqa: E402
from edge_agent.inference.detector import Detection, Detector  # noqa: E402
from edge_agent.inference.plates import PlateReader  # noqa: E402
from edge_agent.inference.tracker import Tracker  # noqa: E402

MODELS = REPO / "models"
VTEST = REPO / "media" / "vtest.avi"

STREET = {
    "name": "bench",
    "source": "vtest",
    "fps": 5,
    "zones": [
        {"name": "left", "polygon": [(0, 0), (0.5, 0), (0.5, 1), (0, 1)]},
        {"name": "road", "polygon": [(0, 0.3), (1, 0.3), (1, 0.7), (0, 0.7)]},
    ],
    "lines": [
        {"name": "west", "points": [(0.3, 0.3), (0.3, 0.75)], "directions": ["out", "in"]},
        {"name": "east", "points": [(0.7, 0.3), (0.7, 0.75)], "directions": ["in", "out"]},
        {"name": "north", "points": [(0.3, 0.35), (0.7, 0.35)], "allowed_direction": "in"},
        {"name": "south", "points": [(0.3, 0.65), (0.7, 0.65)]},
    ],
    "movements": [
        {"name": "west_east", "entry": "west", "exit": "east"},
        {"name": "east_west", "entry": "east", "exit": "west"},
        {"name": "left_road", "entry": "left", "exit": "road"},
    ],
    "speed": [{"name": "we", "lines": ["west", "east"], "distance_m": 15}],
    "rules": [
        {"kind": "dwell", "zone": "road", "dwell_s": 10},
        {"kind": "stopped", "zone": "road", "stopped_s": 10, "classes": ["person", "car"]},
        {"kind": "crowd", "zone": "left", "max_people": 3, "for_s": 5},
    ],
}


def frames_at_5fps(count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(VTEST))
    frames = []
    index = 0
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        if index % 2 == 0:  # the clip is 10 fps
            frames.append(frame)
        index += 1
    capture.release()
    return frames


def analytics_share(frames: list[np.ndarray], detector: Detector) -> None:
    config = CameraConfig(**STREET)
    start = time.perf_counter()
    detections: list[list[Detection]] = [detector.detect(frame) for frame in frames]
    detect_s = time.perf_counter() - start
    height, width = frames[0].shape[:2]
    best = float("inf")
    events = 0
    for _ in range(5):  # best of five: the analytics are small and the machine is shared
        keep = ClassFilter.from_config(config)
        tracker = Tracker(max_age_s=2.0)
        analytics = TrafficAnalytics(config)
        start = time.perf_counter()
        events = 0
        for index, found in enumerate(detections):
            tracks = tracker.update(keep.apply(found), index / 5)
            events += len(analytics.update(tracks, index / 5, width, height).events)
        best = min(best, time.perf_counter() - start)
    n = len(frames)
    print(f"   frames at 5 fps: {n}, events: {events}")
    print(f"   detector          {detect_s / n * 1000:8.2f} ms/frame   (baseline)")
    print(f"   analytics         {best / n * 1000:8.3f} ms/frame   ratio {best / detect_s:.4f}")
    print("   aim: ratio <= 0.05")


def vehicle_crops(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    crops = []
    for i in range(count):
        rows = ["51F-123.45"] if i % 2 else ["59-X1", "123.45"]
        height = 110 * len(rows) + 20
        plate = np.full((height, 520, 3), 255, np.uint8)
        cv2.rectangle(plate, (4, 4), (515, height - 5), (0, 0, 0), 4)
        for r, row in enumerate(rows):
            (w, _), _ = cv2.getTextSize(row, cv2.FONT_HERSHEY_SIMPLEX, 2.6, 7)
            cv2.putText(
                plate, row, ((520 - w) // 2, 105 + 110 * r), cv2.FONT_HERSHEY_SIMPLEX, 2.6,
                (0, 0, 0), 7, cv2.LINE_AA,
            )  # fmt: skip
        body = np.full((420, 700, 3), rng.integers(40, 160, 3), np.uint8)
        body[420 - height - 25 : 420 - 25, 90:610] = plate
        crops.append(cv2.resize(body, (350, 210)))  # a vehicle's lower box at 1080p
    return crops


def plate_cost(crops: list[np.ndarray]) -> None:
    reader = PlateReader(MODELS / "ocr", threads=2)
    ours = []
    texts = []
    for crop in crops:
        start = time.perf_counter()
        plate = reader.read_crop(crop)
        ours.append(time.perf_counter() - start)
        texts.append(plate.text if plate else None)
    read = sum(t is not None for t in texts)
    ours_ms = statistics.median(ours) * 1000
    print(f"   crops: {len(crops)}, plates read: {read}")
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        print(
            f"   ours              {ours_ms:8.1f} ms/crop   (rapidocr not installed: no baseline)"
        )
        return
    engine = RapidOCR(intra_op_num_threads=2, inter_op_num_threads=1)
    bare = []
    for crop in crops:
        start = time.perf_counter()
        engine(crop)
        bare.append(time.perf_counter() - start)
    bare_ms = statistics.median(bare) * 1000
    print(f"   bare rapidocr     {bare_ms:8.1f} ms/crop   (baseline)")
    print(f"   ours              {ours_ms:8.1f} ms/crop   ratio {ours_ms / bare_ms:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=390, help="frames at 5 fps (vtest has 397)")
    parser.add_argument("--crops", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(frames=60, crops=4)
        args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for needed in (VTEST, MODELS / "nanodet.onnx", MODELS / "ocr"):
        if not needed.exists():
            raise SystemExit(
                f"{needed} missing: run scripts/build-model, scripts/fetch-ocr-models "
                "and scripts/fetch-media"
            )
    print(f"cpu cores: {os.cpu_count()}")
    print("\n1. analytics cost per frame vs the detector (vtest.avi at 5 fps)")
    detector = Detector(model=MODELS / "nanodet.onnx", classes=MODELS / "coco.names")
    analytics_share(frames_at_5fps(args.frames), detector)
    print("\n2. plate reading per vehicle crop")
    plate_cost(vehicle_crops(args.crops))


if __name__ == "__main__":
    main()
