"""`run_detect`: JSON lines for photos and video frames; bad files reported, others kept."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import pytest

from edge_agent.config.cameras import DetectorConfig
from edge_agent.errors import InferenceError
from edge_agent.inference.detect_cli import run_detect
from edge_agent.inference.detector import Detector

from .conftest import iou, read_image
from .test_detector import ASTRONAUT_PERSON


def _clip(media_dir: Path, path: Path, frames: int) -> Path:
    """The first `frames` frames of vtest.avi, re-encoded as MJPG."""
    capture = cv2.VideoCapture(str(media_dir / "vtest.avi"))
    ok, frame = capture.read()
    assert ok
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (frame.shape[1], frame.shape[0])
    )
    for _ in range(frames):
        writer.write(frame)
        ok, frame = capture.read()
        assert ok
    writer.release()
    capture.release()
    return path


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_photo_gives_one_line_per_detection(model_dir: Path, media_dir: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    photo = media_dir / "astronaut.png"
    status = run_detect([photo], model_dir=model_dir, out=out, err=err)
    assert status == 0
    assert err.getvalue() == ""
    lines = _lines(out)
    assert lines[0]["file"] == str(photo)
    assert lines[0]["frame"] == 0
    assert lines[0]["label"] == "person"
    assert set(lines[0]) == {"file", "frame", "label", "score", "box"}
    box = lines[0]["box"]
    assert isinstance(box, list) and len(box) == 4
    assert iou(box, ASTRONAUT_PERSON) >= 0.5


def test_lines_match_the_detector(detector: Detector, model_dir: Path, media_dir: Path) -> None:
    out = io.StringIO()
    run_detect([media_dir / "messi5.jpg"], model_dir=model_dir, out=out)
    direct = detector.detect(read_image(media_dir, "messi5.jpg"))
    lines = _lines(out)
    assert [line["label"] for line in lines] == [d.label for d in direct]
    assert [line["box"] for line in lines] == [[round(v, 1) for v in d.box] for d in direct]


def test_video_every_second_frame(model_dir: Path, media_dir: Path, tmp_path: Path) -> None:
    clip = _clip(media_dir, tmp_path / "street.avi", 5)
    out = io.StringIO()
    assert run_detect([clip], model_dir=model_dir, every=2, out=out) == 0
    lines = _lines(out)
    assert {line["frame"] for line in lines} == {0, 2, 4}
    people = [line for line in lines if line["label"] == "person"]
    assert len(people) >= 9  # three or more walkers in each analysed frame
    for line in lines:
        x1, y1, x2, y2 = line["box"]  # type: ignore[misc]
        assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576


def test_unreadable_files_fail_but_others_are_processed(
    model_dir: Path, media_dir: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "broken.jpg"
    garbage.write_bytes(b"\xff\xd8 not really a jpeg")
    missing = tmp_path / "missing.png"
    out, err = io.StringIO(), io.StringIO()
    files = [garbage, media_dir / "motorcycle_left.png", missing, tmp_path]
    status = run_detect(files, model_dir=model_dir, out=out, err=err)
    assert status == 1
    messages = err.getvalue()
    assert str(garbage) in messages
    assert f"{missing}: no such file" in messages
    assert f"{tmp_path}: not a regular file" in messages
    assert [line["label"] for line in _lines(out)][:1] == ["motorcycle"]


def test_threshold_and_config(model_dir: Path, media_dir: Path) -> None:
    out = io.StringIO()
    config = DetectorConfig(threshold=0.3, class_thresholds={"sports ball": 0.99})
    run_detect(
        [media_dir / "messi5.jpg"], config=config, model_dir=model_dir, threshold=0.6, out=out
    )
    lines = _lines(out)
    assert lines and all(float(line["score"]) >= 0.6 for line in lines)  # type: ignore[arg-type]
    assert "sports ball" not in {line["label"] for line in lines}


def test_missing_model_raises(tmp_path: Path, media_dir: Path) -> None:
    with pytest.raises(InferenceError, match="scripts/build-model"):
        run_detect([media_dir / "astronaut.png"], model_dir=tmp_path, out=io.StringIO())


def test_bad_arguments(model_dir: Path, media_dir: Path) -> None:
    with pytest.raises(ValueError, match="every"):
        run_detect([media_dir / "astronaut.png"], model_dir=model_dir, every=0)
    with pytest.raises(ValueError, match="threshold"):
        run_detect([media_dir / "astronaut.png"], model_dir=model_dir, threshold=1.5)


def test_argument_parser(model_dir: Path, media_dir: Path) -> None:
    import argparse

    from edge_agent.inference.detect_cli import add_detect_arguments

    parser = argparse.ArgumentParser(prog="edge-agent detect", exit_on_error=False)
    add_detect_arguments(parser)
    args = parser.parse_args(["--threshold", "0.5", "--every", "3", "a.png", "b.avi"])
    assert args.files == [Path("a.png"), Path("b.avi")]
    assert (args.threshold, args.every, args.model, args.decoder) == (0.5, 3, None, None)
    for bad in (["--threshold", "2", "a.png"], ["--every", "0", "a.png"]):
        with pytest.raises(argparse.ArgumentError):
            parser.parse_args(bad)
    out = io.StringIO()
    status = run_detect(
        [media_dir / "astronaut.png"],
        model_dir=model_dir,
        threshold=args.threshold,
        every=args.every,
        out=out,
    )
    assert status == 0
    assert _lines(out)[0]["label"] == "person"
