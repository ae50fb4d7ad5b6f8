"""`edge-agent detect`: run the detector over image and video files, print JSON lines.

One line per detection: `{"file", "frame", "label", "score", "box": [x1, y1, x2, y2]}`
with the box in the original image's pixels; `frame` is 0 for a still image and the
0-based frame index in a video. A file that cannot be read is reported on stderr and the
remaining files are still processed; the exit status is then 1.

With `--analytics CONFIG` it runs one camera of that agent configuration (its classes,
zones, lines, movements, speed stretches, rules and plates) on each video as the agent would,
frame times taken from the video's own frame rate, and prints one line per event:
`{"file", "frame", "ts", "kind", "data"}`, the counts of the last, unfinished bin included.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, TextIO

import cv2
import numpy as np

from edge_agent.config import Settings
from edge_agent.config.cameras import DetectorConfig
from edge_agent.contract import Kind, utc_iso
from edge_agent.errors import ConfigError, InferenceError
from edge_agent.inference.classes import detector_floors
from edge_agent.inference.detect_args import add_detect_arguments
from edge_agent.inference.detector import Detector
from edge_agent.inference.pipeline import FrameAnalyzer
from edge_agent.inference.plates import PlateReader

__all__ = ["add_detect_arguments", "frames_of", "run_analytics", "run_detect"]

EXIT_OK = 0
EXIT_SOME_FILES_FAILED = 1


class UnreadableFile(Exception):
    """One input file could not be decoded; the run goes on with the next."""


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


def _video_fps(path: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        capture.release()
    return fps if 0 < fps <= 240 else 25.0


def run_analytics(
    files: Sequence[Path],
    *,
    settings: Settings,
    camera: str | None = None,
    start: float | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Analyse each video as camera `camera` of `settings` would; JSON lines on `out`.

    Raises `ConfigError` naming the key when there is no such camera, `InferenceError`
    when the model cannot be loaded. Returns 0, or 1 when some file could not be read."""
    cameras = [c for c in settings.cameras if camera is None or c.name == camera]
    if not cameras:
        known = ", ".join(c.name for c in settings.cameras) or "none"
        raise ConfigError([f"cameras: no camera named {camera!r} (configured: {known})"])
    config = cameras[0]
    detector = Detector.from_config(settings.detector, model_dir=settings.paths.model_dir)
    detector.lower_thresholds(
        detector_floors([config], detector.labels, settings.detector.threshold)
    )
    plates = PlateReader(settings.paths.model_dir / "ocr") if config.plates.enabled else None
    status = EXIT_OK
    for path in files:
        analyzer = FrameAnalyzer(config, detector.detect, plates=plates)
        try:
            fps = _video_fps(path)
            every = max(1, round(fps / config.fps))
            t0 = start if start is not None else path.stat().st_mtime
            ts = t0
            for index, frame in frames_of(path, every):
                ts = t0 + index / fps
                for kind, data in analyzer.analyse(frame, ts).events:
                    _write(out, path, index, ts, kind, data)
            for kind, data in analyzer.finish(ts):
                _write(out, path, -1, ts, kind, data)
            out.flush()
        except (UnreadableFile, InferenceError, OSError) as exc:
            err.write(f"edge-agent detect: {exc}\n")
            status = EXIT_SOME_FILES_FAILED
    return status


def _write(out: TextIO, path: Path, index: int, ts: float, kind: Kind, data: object) -> None:
    line = {"file": str(path), "frame": index, "ts": utc_iso(ts), "kind": kind.value, "data": data}
    out.write(json.dumps(line, ensure_ascii=False) + "\n")
