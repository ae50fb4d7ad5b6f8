"""The agent with cameras, as a real process: the demo default shows detections; a camera
whose model is missing, or whose source is gone, does not take the agent down."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.app import Agent
from edge_agent.config import Settings
from edge_agent.errors import CameraError
from tests.camera.test_rtsp_e2e import outbox_events, wait_until
from tests.conftest import agent_command, agent_env

pytestmark = pytest.mark.slow


def start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        agent_command("run", *args),
        cwd=cwd,
        env=agent_env(EDGE_AGENT_WEB__PORT="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(agent: subprocess.Popen[str]) -> str:
    agent.send_signal(signal.SIGTERM)
    output, _ = agent.communicate(timeout=30)
    assert agent.returncode == 0, output
    return output


def test_demo_default_detects_people_in_the_sample_clip(
    tmp_path: Path, vtest: Path, model_dir: Path
) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "vtest.avi").symlink_to(vtest)
    (tmp_path / "models").symlink_to(model_dir)
    agent = start(tmp_path)
    try:
        events = wait_until(
            tmp_path / "var" / "outbox.sqlite3",
            agent,
            lambda ev: any(e["kind"] == "detection" and e["data"]["label"] == "person" for e in ev),
            "a person detection from the demo camera",
        )
        output = stop(agent)
    finally:
        agent.kill()
    assert any(e["kind"] == "camera" and e["data"]["state"] == "online" for e in events)
    for name in ("inference", "capture:demo", "camera:demo"):
        assert f"started {name}" in output and f"closed {name}" in output
    assert list((tmp_path / "var" / "snapshots" / "demo").glob("*.jpg"))


def test_missing_model_leaves_cameras_capturing(tmp_path: Path, short_clip: Path) -> None:
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f'sensors = []\n[paths]\nmodel_dir = "{tmp_path / "no-models"}"\n'
        f'[[cameras]]\nname = "clip"\nsource = "{short_clip}"\nloop = true\n'
        f'[[cameras]]\nname = "gone"\nsource = "{tmp_path / "gone.mp4"}"\n'
    )
    agent = start(tmp_path, "--config", str(config))
    try:
        events = wait_until(
            tmp_path / "var" / "outbox.sqlite3",
            agent,
            lambda ev: (
                {e["data"]["camera"] for e in ev if e["kind"] == "camera"} >= {"clip", "gone"}
            ),
            "camera events from both cameras",
        )
        output = stop(agent)
    finally:
        agent.kill()
    states = {e["data"]["camera"]: e["data"]["state"] for e in events if e["kind"] == "camera"}
    assert states == {"clip": "online", "gone": "offline"}
    assert "detector unavailable" in output and "scripts/build-model" in output
    assert not [
        e for e in outbox_events(tmp_path / "var" / "outbox.sqlite3") if e["kind"] == "detection"
    ]


@pytest.mark.asyncio
async def test_camera_snapshot_for_the_snapshot_command(
    tmp_path: Path, short_clip: Path, model_dir: Path
) -> None:
    settings = Settings(
        sensors=[],
        web={"enabled": False},
        paths={"state_dir": tmp_path / "state", "model_dir": model_dir},
        cameras=[{"name": "clip", "source": str(short_clip), "loop": True}],
    )
    agent = Agent(settings)
    async with contextlib.AsyncExitStack() as stack:
        for component in agent.components:
            await stack.enter_async_context(component)
        capture = agent.captures["clip"]
        assert await capture.frames.get(10) is not None
        jpeg = await agent.camera_snapshot("clip")
        with pytest.raises(CameraError, match="no camera named 'nope'"):
            await agent.camera_snapshot("nope")
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (576, 768, 3)
