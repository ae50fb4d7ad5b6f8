"""The motion gate on real frames of vtest.avi and on a real static clip."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.config import CameraConfig
from edge_agent.config.cameras import MotionConfig
from edge_agent.inference.detector import Detection, Detector
from edge_agent.inference.motion import MotionGate
from edge_agent.inference.pipeline import FrameAnalyzer
from tests.conftest import require_binary


def read_frames(path: Path, count: int, *, every: int = 1) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    index = 0
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        if index % every == 0:
            frames.append(frame)
        index += 1
    capture.release()
    return frames


@pytest.fixture(scope="module")
def walking(media_dir: Path) -> list[np.ndarray]:
    """Twenty frames of people walking, 0.5 s apart (every 5th frame of the 10 fps clip)."""
    return read_frames(media_dir / "vtest.avi", 20, every=5)


@pytest.fixture(scope="module")
def static_clip(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten seconds of one vtest.avi frame encoded as H.264: a still scene with real
    compression noise, as a camera over an empty street sends it."""
    ffmpeg = require_binary("ffmpeg", package="ffmpeg")
    still = tmp_path_factory.mktemp("static") / "still.png"
    cv2.imwrite(str(still), read_frames(media_dir / "vtest.avi", 1)[0])
    clip = still.with_name("static.mp4")
    subprocess.run(
        [
            *(ffmpeg, "-loglevel", "error", "-y", "-loop", "1", "-i", str(still), "-t", "10"),
            *("-r", "10", "-c:v", "libx264", "-preset", "veryfast", "-crf", "28"),
            *("-pix_fmt", "yuv420p", str(clip)),
        ],
        check=True,
    )
    return clip


def test_walking_people_are_motion(walking: list[np.ndarray]) -> None:
    gate = MotionGate(MotionConfig())
    shares = [gate.moving_share(frame) for frame in walking]
    assert shares[0] == 0.0  # no background yet
    assert all(share >= MotionConfig().min_area for share in shares[1:])


def test_masks_hide_motion(walking: list[np.ndarray]) -> None:
    everything = [[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]]
    gate = MotionGate(MotionConfig(masks=everything))
    shares = [gate.moving_share(frame) for frame in walking]
    assert shares[1:] == [0.0] * (len(walking) - 1)


def test_static_clip_keeps_detector_idle_apart_from_heartbeat(
    static_clip: Path, detector: Detector
) -> None:
    frames = read_frames(static_clip, 100)
    assert len(frames) == 100
    config = CameraConfig(
        name="still", source=str(static_clip), fps=10, motion=MotionConfig(heartbeat_s=4.0)
    )
    runs: list[float] = []

    def counting_detect(image: np.ndarray) -> list[Detection]:
        runs.append(len(runs))
        return detector.detect(image)

    analyzer = FrameAnalyzer(config, counting_detect)
    reasons = [analyzer.analyse(frame, i / 10).gate_reason for i, frame in enumerate(frames)]
    # Ten seconds of a still street: the first look, then one run per 4 s heartbeat.
    assert [r for r in reasons if r] == ["first", "heartbeat", "heartbeat"]
    assert analyzer.detector_runs == len(runs) == 3


def test_gate_off_detects_every_frame(walking: list[np.ndarray], detector: Detector) -> None:
    config = CameraConfig(name="walk", source="x", fps=2)
    gated = FrameAnalyzer(config, detector.detect)
    ungated = FrameAnalyzer(config, detector.detect, gate=False)
    for i, frame in enumerate(walking[:6]):
        gated.analyse(frame, i / 2)
        ungated.analyse(frame, i / 2)
    assert ungated.detector_runs == 6
    assert gated.detector_runs == 6  # people walk in every frame: the gate lets all through


def test_hold_keeps_detecting_just_after_motion(walking: list[np.ndarray]) -> None:
    gate = MotionGate(MotionConfig(hold_s=1.0, heartbeat_s=100))
    assert gate.decide(walking[0], 0.0).reason == "first"
    assert gate.decide(walking[1], 0.5).reason == "motion"
    still = walking[1]
    for _ in range(10):  # let the background learn the still frame
        gate.moving_share(still)
    assert gate.decide(still, 1.0).reason == "hold"
    assert gate.decide(still, 2.0).run is False
