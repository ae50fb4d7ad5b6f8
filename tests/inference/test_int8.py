"""The int8 model agrees with the fp32 model on real photos and street-clip frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_agent.inference.detector import Detection, Detector

from .conftest import iou, read_image


def _frames(media_dir: Path) -> list[np.ndarray]:
    photos = ["astronaut.png", "motorcycle_left.png", "messi5.jpg", "basketball1.png"]
    frames = [read_image(media_dir, name) for name in photos]
    capture = cv2.VideoCapture(str(media_dir / "vtest.avi"))
    for index in (0, 300, 600):
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        assert ok
        frames.append(frame)
    capture.release()
    return frames


def _matched(a: Detection, others: list[Detection]) -> bool:
    return any(o.label == a.label and iou(a.box, o.box) >= 0.7 for o in others)


def test_int8_agrees_with_fp32(
    detector: Detector, int8_detector: Detector, media_dir: Path
) -> None:
    confident = 0
    agreed = 0
    for frame in _frames(media_dir):
        fp32 = [d for d in detector.detect(frame) if d.score >= 0.5]
        int8 = int8_detector.detect(frame)
        confident += len(fp32)
        agreed += sum(_matched(d, int8) for d in fp32)
    assert confident >= 15
    assert agreed / confident >= 0.9


def test_int8_model_is_smaller(model_dir: Path) -> None:
    fp32 = (model_dir / "nanodet.onnx").stat().st_size
    int8 = (model_dir / "nanodet.int8.onnx").stat().st_size
    assert int8 < fp32 / 3
