"""Capture from real video files and a real RTSP server, in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.config import CameraConfig
from edge_agent.contract import Kind
from edge_agent.health import ComponentHealth, State
from edge_agent.sensors.camera import Capture, Frame, FrameSlot, redact
from tests.camera.conftest import RtspServer


class Recorder:
    """A sink that keeps what it is given (the outbox's place in these tests)."""

    def __init__(self) -> None:
        self.events: list[tuple[Kind, dict[str, Any], str, float]] = []

    async def __call__(self, kind: Kind, data: dict[str, Any], stream: str, ts: float) -> None:
        self.events.append((kind, data, stream, ts))

    def states(self) -> list[str]:
        return [d["state"] for _, d, _, _ in self.events if d.get("event") == "state"]


def wait_for(condition: Callable[[], bool], timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def drain(capture: Capture, *, limit: int, timeout_s: float = 5.0) -> list[Frame]:
    frames = []
    while len(frames) < limit:
        frame = await capture.frames.get(timeout_s)
        if frame is None:
            break
        frames.append(frame)
    return frames


def test_newest_frame_wins_and_drops_are_counted() -> None:
    slot = FrameSlot()
    images = [np.full((2, 2, 3), i, np.uint8) for i in range(3)]
    results = [slot.put(Frame(image, ts=float(i), index=i)) for i, image in enumerate(images)]
    assert results == [True, False, False]
    assert slot.dropped == 2
    taken = slot.take()
    assert taken is not None and taken.index == 2
    assert slot.take() is None


def test_credentials_never_reach_logs() -> None:
    assert redact("rtsp://admin:secret@192.0.2.10/s1") == "rtsp://**********@192.0.2.10/s1"
    assert redact("/dev/video0") == "/dev/video0"


@pytest.mark.asyncio
async def test_file_is_read_whole_then_goes_offline(short_clip: Path) -> None:
    config = CameraConfig(name="clip", source=str(short_clip), fps=5)
    sink = Recorder()
    health = ComponentHealth("camera:clip", kind="camera")
    capture = Capture(config, sink=sink, health=health, pace=False, rate_limit=False, lossless=True)
    async with capture:
        runner = asyncio.create_task(capture.run())
        frames = await drain(capture, limit=1000, timeout_s=5)
        assert await asyncio.to_thread(capture.finished.wait, 10)
        # Finished, not wedged: the registry's watchdog check skips stopped components.
        assert health.state is State.STOPPED
        runner.cancel()
    assert [f.index for f in frames] == list(range(1, 31))
    assert frames[0].image.shape == (576, 768, 3)
    assert health.counters["frames_captured"] == 30
    assert "frames_dropped" not in health.counters
    assert sink.states() == ["online", "offline"]
    assert sink.events[-1][1]["detail"] == "end of file"
    assert all(kind is Kind.CAMERA and stream == "clip" for kind, _, stream, _ in sink.events)


@pytest.mark.asyncio
async def test_looping_file_starts_again(short_clip: Path) -> None:
    config = CameraConfig(name="clip", source=str(short_clip), fps=5, loop=True)
    health = ComponentHealth("camera:clip", kind="camera")
    capture = Capture(
        config, sink=Recorder(), health=health, pace=False, rate_limit=False, lossless=True
    )
    async with capture:
        frames = await drain(capture, limit=75)
    assert len(frames) == 75
    # Frame 31 is the clip's first frame again.
    assert np.array_equal(frames[30].image, frames[0].image)
    assert health.state is State.STOPPED


@pytest.mark.asyncio
async def test_slow_consumer_gets_the_newest_frame(short_clip: Path) -> None:
    config = CameraConfig(name="clip", source=str(short_clip), fps=5)
    health = ComponentHealth("camera:clip", kind="camera")
    capture = Capture(config, sink=Recorder(), health=health, pace=False, rate_limit=False)
    async with capture:
        await asyncio.to_thread(capture.finished.wait, 10)
        frame = await capture.frames.get(1)
    # The thread never waited for us: it read all 30 frames, kept only the newest.
    assert frame is not None and frame.index == 30
    assert health.counters["frames_dropped"] == 29


@pytest.mark.asyncio
async def test_latest_frame_as_jpeg(short_clip: Path) -> None:
    config = CameraConfig(name="clip", source=str(short_clip), fps=5)
    health = ComponentHealth("camera:clip", kind="camera")
    capture = Capture(config, sink=Recorder(), health=health, pace=False, rate_limit=False)
    assert capture.latest_jpeg() is None
    async with capture:
        await asyncio.to_thread(capture.finished.wait, 10)
        jpeg = capture.latest_jpeg()
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (576, 768, 3)


@pytest.mark.asyncio
async def test_missing_source_reports_offline_and_keeps_retrying(tmp_path: Path) -> None:
    config = CameraConfig(name="gone", source=str(tmp_path / "nothing.mp4"), backoff_max_s=1)
    sink = Recorder()
    health = ComponentHealth("camera:gone", kind="camera")
    capture = Capture(config, sink=sink, health=health)
    async with capture:
        runner = asyncio.create_task(capture.run())
        assert await asyncio.to_thread(
            wait_for, lambda: health.counters.get("open_failures", 0) >= 3
        )
        assert await capture.frames.get(0.1) is None
        runner.cancel()
    assert sink.states() == ["offline"]  # reported once, not on every retry
    assert "video file not found" in sink.events[0][1]["detail"]
    assert "nothing.mp4" in health.last_error


@pytest.mark.asyncio
async def test_rtsp_paced_by_the_source_and_rate_limited(rtsp_server: RtspServer) -> None:
    config = CameraConfig(name="street", source=rtsp_server.url, fps=2, read_timeout_s=3)
    health = ComponentHealth("camera:street", kind="camera")
    capture = Capture(config, sink=Recorder(), health=health)
    async with capture:
        frames = await drain(capture, limit=4)
    assert len(frames) == 4
    assert frames[0].image.shape == (576, 768, 3)
    # Only frames due at 2 fps are decoded: the rest of the 10 fps stream is skipped.
    captured = health.counters["frames_captured"]
    assert health.counters["frames_skipped"] >= captured - 2 * len(frames) - 2
    assert health.facts["source_fps"] == 10
