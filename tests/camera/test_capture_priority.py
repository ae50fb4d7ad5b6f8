"""The capture thread runs at `decode_nice` above the agent's niceness; the rest keep theirs.
'auto' lowers it only for an agent's one camera."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from edge_agent.config import CameraConfig
from edge_agent.health import ComponentHealth
from edge_agent.sensors.camera import Capture
from tests.camera.test_capture import Recorder


async def thread_nice(config: CameraConfig, *, cameras: int = 1) -> int:
    capture = Capture(
        config,
        sink=Recorder(),
        health=ComponentHealth("camera:clip", kind="camera"),
        pace=False,
        rate_limit=False,
        lossless=True,
        cameras=cameras,
    )
    async with capture:
        # The first frame proves the thread is past its start, where it sets its niceness.
        assert await capture.frames.get(10) is not None
        (thread,) = [t for t in threading.enumerate() if t.name == f"capture-{config.name}"]
        assert thread.native_id is not None
        return os.getpriority(os.PRIO_PROCESS, thread.native_id)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("decode_nice", "cameras", "added"), [("auto", 1, 19), ("auto", 4, 0), (7, 4, 7), (0, 1, 0)]
)
async def test_capture_thread_niceness(
    short_clip: Path, decode_nice: str | int, cameras: int, added: int
) -> None:
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    config = CameraConfig(name="clip", source=str(short_clip), fps=5, decode_nice=decode_nice)
    assert await thread_nice(config, cameras=cameras) == min(19, own + added)
    # Only that thread: the loop's own thread is untouched.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


def test_decode_nice_out_of_range_is_named() -> None:
    with pytest.raises(ValueError, match="decode_nice"):
        CameraConfig(name="clip", source="x", decode_nice=20)
