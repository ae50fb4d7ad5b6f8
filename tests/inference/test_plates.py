"""Plate reading: PP-OCR models from rapidocr's wheel on our onnxruntime, read plates drawn
in the Vietnamese layouts, validation, and the `plate` event of a vehicle crossing a line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.contract import Kind
from edge_agent.inference.detector import Detection
from edge_agent.inference.pipeline import FrameAnalyzer
from edge_agent.inference.plates import PlateReader, valid_plate
from edge_agent.inference.snapshots import SnapshotStore

from .conftest import IN_CI, MODELS, REPO
from .scripted import box_at, line_path
from .test_analytics import T0, camera

sys.path.insert(0, str(REPO / "scripts"))
import fetch_ocr_models


@pytest.fixture(scope="module")
def ocr_dir() -> Path:
    script = REPO / "scripts" / "fetch_ocr_models.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        message = f"fetch_ocr_models.py failed:\n{result.stdout}\n{result.stderr}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return MODELS / "ocr"


@pytest.fixture(scope="module")
def reader(ocr_dir: Path) -> PlateReader:
    return PlateReader(ocr_dir)


def plate_image(rows: list[str]) -> np.ndarray:
    """A plate as Vietnamese plates look: black characters on white, a black border; two
    rows for motorbikes."""
    height = 110 * len(rows) + 20
    plate = np.full((height, 520, 3), 255, np.uint8)
    cv2.rectangle(plate, (4, 4), (515, height - 5), (0, 0, 0), 4)
    for i, row in enumerate(rows):
        (width, _), _ = cv2.getTextSize(row, cv2.FONT_HERSHEY_SIMPLEX, 2.6, 7)
        origin = ((520 - width) // 2, 105 + 110 * i)
        cv2.putText(plate, row, origin, cv2.FONT_HERSHEY_SIMPLEX, 2.6, (0, 0, 0), 7, cv2.LINE_AA)
    return plate


def vehicle(rows: list[str], size: tuple[int, int] = (700, 420)) -> np.ndarray:
    """The back of a grey vehicle with its plate low in the middle, scaled to `size`."""
    body = np.full((420, 700, 3), (80, 90, 100), np.uint8)
    plate = plate_image(rows)
    h, w = plate.shape[:2]
    body[420 - h - 25 : 420 - 25, 90 : 90 + w] = plate
    return cv2.resize(body, size)


def test_the_models_are_the_ones_in_rapidocrs_wheel(ocr_dir: Path) -> None:
    assert fetch_ocr_models.present(ocr_dir)  # each file checked by sha256


@pytest.mark.parametrize(
    "rows, text",
    [
        (["51F-123.45"], "51F-123.45"),
        (["29A1-12345"], "29A1-12345"),
        (["59-X1", "123.45"], "59-X1 123.45"),
    ],
)
def test_reads_both_plate_layouts_exactly(reader: PlateReader, rows: list[str], text: str) -> None:
    plate = reader.read_crop(vehicle(rows))
    assert plate is not None
    assert plate.text == text
    assert plate.confidence > 0.9


def test_text_that_is_not_a_plate_is_rejected(reader: PlateReader) -> None:
    # The recogniser reads it fine; validation refuses it.
    assert [line.text for line in reader.reader.read(vehicle(["GIAM TOC"]))] == ["GIAM TOC"]
    assert reader.read_crop(vehicle(["GIAM TOC"])) is None


@pytest.mark.parametrize(
    "text", ["51F-123.45", "30E-1234", "29A1-12345", "59-X1 123.45", "29-B1 1234"]
)
def test_plate_shapes(text: str) -> None:
    assert valid_plate(text)


@pytest.mark.parametrize("text", ["GIAM TOC", "51F12345", "5F-123.45", "51F-123.4", "59-X1", "ABC"])
def test_not_plate_shapes(text: str) -> None:
    assert not valid_plate(text)


def _crossing_car(tmp_path: Path, reader: PlateReader, *, enabled: bool) -> tuple[list, Path]:
    line = {"name": "gate", "points": [(0.0, 0.6), (1.0, 0.6)], "directions": ["in", "out"]}
    config = camera(lines=[line], zones=[], plates={"enabled": enabled})
    path = line_path((0.5, 0.4), (0.5, 0.9), 10)
    boxes = [box_at(p, width=0.35, height=0.3) for p in path]
    store = SnapshotStore(tmp_path / "plates", max_count=10, max_bytes=10**8, max_age_s=86400)
    frames = iter(boxes)
    analyzer = FrameAnalyzer(
        config,
        lambda image: [Detection(2, "car", 0.9, next(frames))],
        plates=reader,
        plate_snapshots=store,
        gate=False,
    )
    events = []
    for step, box in enumerate(boxes):
        frame = np.full((1000, 1000, 3), 60, np.uint8)
        x1, y1, x2, y2 = (int(v) for v in box)
        frame[y1:y2, x1:x2] = vehicle(["51F-123.45"], (x2 - x1, y2 - y1))
        events += analyzer.analyse(frame, T0 + step * 0.2).events
    return [d for k, d in events if k is Kind.PLATE], tmp_path / "plates"


def test_a_vehicle_crossing_the_line_gets_one_plate_event(
    tmp_path: Path, reader: PlateReader
) -> None:
    (plate,) = _crossing_car(tmp_path, reader, enabled=True)[0]
    assert plate["text"] == "51F-123.45" and plate["confidence"] > 0.9
    assert plate["line"] == "gate" and plate["label"] == "car"
    assert (tmp_path / "plates" / plate["snapshot"]).is_file()


def test_plates_are_off_by_default(tmp_path: Path, reader: PlateReader) -> None:
    assert camera().plates.enabled is False
    plates, directory = _crossing_car(tmp_path, reader, enabled=False)
    assert plates == [] and not directory.exists()


def test_plate_snapshots_expire(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=10, max_bytes=10**8, max_age_s=60)
    old = store.save(np.zeros((8, 8, 3), np.uint8), "old")
    assert old is not None
    os.utime(old, (old.stat().st_mtime - 120, old.stat().st_mtime - 120))
    store.prune()
    assert not old.exists()
