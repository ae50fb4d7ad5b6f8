"""`edge-agent detect`: run the detector over image and video files, print JSON lines.

One line per detection: `{"file", "frame", "label", "score", "box": [x1, y1, x2, y2]}`
with the box in the original image's pixels; `frame` is 0 for a still image and the
0-based frame index in a video. A file that cannot be read is reported on stderr and the
remaining files are still processed; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, TextIO

import cv2
import numpy as np

from edge_agent.config.cameras import DetectorConfig
from edge_agent.errors import InferenceError
from edge_agent.inference.detector import Detector

EXIT_OK = 0
EXIT_SOME_FILES_FAILED = 1


class UnreadableFile(Exception):
    """One input file could not be decoded; the run goes on with the next."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def _stride(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    """The `detect` subcommand's options, for the CLI to attach to its subparser."""
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="images or videos")
    parser.add_argument("--model", type=Path, help="ONNX model (default: the shipped NanoDet)")
    parser.add_argument("--classes", type=Path, help="class list, one name per line")
    parser.add_argument(
        "--threshold", type=_fraction, metavar="T", help="lowest score reported (0..1)"
    )
    parser.add_argument(
        "--decoder", choices=["auto", "nanodet", "yolov8"], help="model output format"
    )
    parser.add_argument(
        "--every", type=_stride, default=1, metavar="N", help="analyse every Nth video frame"
    )


def frames_of(path: Path, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR frame) for an image (index 0) or every `every`-th frame of a video."""
    if not path.exists():
        raise UnreadableFile(f"{path}: no such file")
    if not path.is_file():
        raise UnreadableFile(f"{path}: not a regular file")
    if cv2.haveImageReader(str(path)):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UnreadableFile(f"{path}: image could not be decoded")
        yield 0, image
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise UnreadableFile(f"{path}: not an image or video OpenCV can read")
        index = 0
        produced = False
        while True:
            if index % every:
                if not capture.grab():
                    break
            else:
                ok, frame = capture.read()
                if not ok:
                    break
                produced = True
                yield index, frame
            index += 1
        if not produced:
            raise UnreadableFile(f"{path}: not an image or video OpenCV can decode")
    finally:
        capture.release()


def run_detect(
    files: Sequence[Path],
    *,
    config: DetectorConfig | None = None,
    model_dir: Path = Path("models"),
    model: Path | None = None,
    classes: Path | None = None,
    threshold: float | None = None,
    decoder: Literal["auto", "nanodet", "yolov8"] | None = None,
    every: int = 1,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Detect objects in `files`, one JSON line per detection on `out`.

    Explicit arguments override `config` (the `[detector]` section). Returns 0, or 1 when
    some file could not be read (each is named on `err`). Raises `InferenceError` when the
    model itself cannot be loaded, and `ValueError` for a bad `every` or `threshold`."""
    if every < 1:
        raise ValueError(f"every must be ≥ 1, got {every}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within 0..1, got {threshold}")
    overrides = {
        key: value
        for key, value in (
            ("model", model),
            ("classes", classes),
            ("threshold", threshold),
            ("decoder", decoder),
        )
        if value is not None
    }
    settings = (config or DetectorConfig()).model_copy(update=overrides)
    detector = Detector.from_config(settings, model_dir=model_dir)
    status = EXIT_OK
    for path in files:
        try:
            for index, frame in frames_of(path, every):
                for found in detector.detect(frame):
                    line = {
                        "file": str(path),
                        "frame": index,
                        "label": found.label,
                        "score": round(found.score, 4),
                        "box": [round(v, 1) for v in found.box],
                    }
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
        except (UnreadableFile, InferenceError) as exc:
            err.write(f"edge-agent detect: {exc}\n")
            status = EXIT_SOME_FILES_FAILED
    return status
