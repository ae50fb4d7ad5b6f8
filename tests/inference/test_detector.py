"""The real NanoDet model through `Detector`, on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.config.cameras import DetectorConfig
from edge_agent.errors import InferenceError
from edge_agent.inference.detector import Detection, Detector, nms

from .conftest import iou, read_image

# Measured once with this model and checked by eye against the photo: the astronaut from the
# image's left edge to her arm on the helmet, head to the bottom edge (512 × 512 image).
ASTRONAUT_PERSON = (15.0, 14.0, 364.0, 508.0)
# The red motorcycle, front wheel to rear wheel (741 × 500 image).
MOTORCYCLE = (101.0, 69.0, 687.0, 454.0)


def test_astronaut_is_a_person_where_she_stands(detector: Detector, media_dir: Path) -> None:
    found = detector.detect(read_image(media_dir, "astronaut.png"))
    people = [d for d in found if d.label == "person"]
    assert people, found
    best = people[0]
    assert best.class_id == 0
    assert 0.6 <= best.score <= 0.85  # about 0.73
    assert iou(best.box, ASTRONAUT_PERSON) >= 0.5


def test_motorcycle_is_found(detector: Detector, media_dir: Path) -> None:
    found = detector.detect(read_image(media_dir, "motorcycle_left.png"))
    assert found[0].label == "motorcycle"
    assert found[0].score >= 0.7  # about 0.8
    assert iou(found[0].box, MOTORCYCLE) >= 0.5


def test_results_are_frozen_and_sorted(detector: Detector, media_dir: Path) -> None:
    found = detector.detect(read_image(media_dir, "messi5.jpg"))
    assert len(found) >= 3
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    with pytest.raises(AttributeError):
        found[0].score = 1.0  # type: ignore[misc]
    height, width = 342, 548
    for d in found:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert found[0].as_dict()["box"] == [round(v, 1) for v in found[0].box]


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_frame_has_no_detections(detector: Detector, value: int) -> None:
    assert detector.detect(np.full((480, 640, 3), value, np.uint8)) == []


def test_boxes_map_back_through_letterbox(detector: Detector, media_dir: Path) -> None:
    """The astronaut pasted at an offset into a larger, wider frame: same box, shifted."""
    photo = read_image(media_dir, "astronaut.png")
    canvas = np.zeros((900, 1400, 3), np.uint8)
    canvas[300:812, 700:1212] = photo
    found = [d for d in detector.detect(canvas) if d.label == "person"]
    assert found
    shifted = (
        ASTRONAUT_PERSON[0] + 700,
        ASTRONAUT_PERSON[1] + 300,
        ASTRONAUT_PERSON[2] + 700,
        ASTRONAUT_PERSON[3] + 300,
    )
    assert iou(found[0].box, shifted) >= 0.7


def test_grey_and_bgra_frames_are_accepted(detector: Detector, media_dir: Path) -> None:
    import cv2

    photo = read_image(media_dir, "astronaut.png")
    grey = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)
    assert detector.detect(grey)[0].label == "person"
    assert detector.detect(bgra) == detector.detect(photo)


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10, 2), np.uint8),
        np.zeros((0, 5, 3), np.uint8),
    ],
)
def test_bad_frames_raise_inference_error(detector: Detector, frame: np.ndarray) -> None:
    with pytest.raises(InferenceError, match="frame must be"):
        detector.detect(frame)


def test_class_thresholds_apply_per_class(model_dir: Path, media_dir: Path) -> None:
    strict = Detector(
        model=model_dir / "nanodet.onnx",
        classes=model_dir / "coco.names",
        threshold=0.3,
        class_thresholds={"person": 0.95},
    )
    found = strict.detect(read_image(media_dir, "messi5.jpg"))
    labels = {d.label for d in found}
    assert "person" not in labels
    assert "sports ball" in labels
    assert all(d.score >= 0.3 for d in found)


def test_unknown_class_threshold_is_rejected(model_dir: Path) -> None:
    with pytest.raises(InferenceError, match="'unicorn'"):
        Detector(
            model=model_dir / "nanodet.onnx",
            classes=model_dir / "coco.names",
            class_thresholds={"unicorn": 0.5},
        )


def test_missing_model_names_file_and_build_script(tmp_path: Path, model_dir: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(InferenceError) as info:
        Detector(model=missing, classes=model_dir / "coco.names")
    assert str(missing) in str(info.value)
    assert "scripts/build-model" in str(info.value)


def test_missing_class_list_names_file(tmp_path: Path, model_dir: Path) -> None:
    missing = tmp_path / "classes.txt"
    with pytest.raises(InferenceError, match="scripts/build-model") as info:
        Detector(model=model_dir / "nanodet.onnx", classes=missing)
    assert str(missing) in str(info.value)


def test_from_config_with_empty_model_dir(tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match=r"nanodet\.int8\.onnx"):
        Detector.from_config(DetectorConfig(variant="int8"), model_dir=tmp_path)


def test_corrupt_model_is_an_inference_error(tmp_path: Path, model_dir: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf")
    with pytest.raises(InferenceError, match="cannot load detector model"):
        Detector(model=broken, classes=model_dir / "coco.names")


def test_class_list_that_does_not_fit_the_model(model_dir: Path) -> None:
    with pytest.raises(InferenceError, match="class list"):
        Detector(model=model_dir / "nanodet.onnx", classes=["person", "car"])


def test_from_config_uses_model_dir_and_variant(model_dir: Path, media_dir: Path) -> None:
    config = DetectorConfig(variant="int8", threshold=0.5, intra_op_threads=1)
    detector = Detector.from_config(config, model_dir=model_dir)
    assert detector.model_path == model_dir / "nanodet.int8.onnx"
    assert detector.threshold == 0.5
    found = detector.detect(read_image(media_dir, "motorcycle_left.png"))
    assert [d.label for d in found][:1] == ["motorcycle"]


def test_nms_is_greedy_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.8, 0.9, 0.5, 0.7], np.float32)
    assert nms(boxes, scores, 0.5) == [1, 2]
    assert nms(boxes, scores, 0.95) == [1, 0, 3, 2]


def test_detection_is_a_value() -> None:
    a = Detection(class_id=1, label="bicycle", score=0.5, box=(1.0, 2.0, 3.0, 4.0))
    assert a == Detection(class_id=1, label="bicycle", score=0.5, box=(1.0, 2.0, 3.0, 4.0))
    assert a.as_dict() == {"label": "bicycle", "class_id": 1, "score": 0.5, "box": [1, 2, 3, 4]}
