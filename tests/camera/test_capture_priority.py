"""The capture thread runs at `decode_nice` among the agent's threads; the rest keep 0."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from edge_agent.config import CameraConfig
from edge_agent.health import ComponentHealth
from edge_agent.sensors.camera import Capture
from tests.camera.test_capture import Recorder


async def thread_nice(config: CameraConfig) -> int:
    capture = Capture(
        config,
        sink=Recorder(),
        health=ComponentHealth("camera:clip", kind="camera"),
        pace=False,
        rate_limit=False,
        lossless=True,
    )
    async with capture:
        # The first frame proves the thread is past its start, where it sets its niceness.
        assert await capture.frames.get(10) is not None
        (thread,) = [t for t in threading.enumerate() if t.name == f"capture-{config.name}"]
        assert thread.native_id is not None
        return os.getpriority(os.PRIO_PROCESS, thread.native_id)


@pytest.mark.asyncio
async def test_capture_thread_is_nicer_than_the_rest(short_clip: Path) -> None:
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    config = CameraConfig(name="clip", source=str(short_clip), fps=5)
    assert config.decode_nice == 10
    assert await thread_nice(config) == min(19, own + 10)
    # Only that thread: the loop's own thread is untouched.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


@pytest.mark.asyncio
async def test_decode_nice_zero_leaves_the_thread_as_it_was(short_clip: Path) -> None:
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    config = CameraConfig(name="flat", source=str(short_clip), fps=5, decode_nice=0)
    assert await asyncio.wait_for(thread_nice(config), 30) == own
