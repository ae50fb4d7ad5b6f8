"""The demo camera belongs to the embedded default only: a node configured by a file never
plays the sample clip, even when the file names no cameras and media/vtest.avi lies in its
working directory (the IOC would receive detections the node never made)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.camera.test_rtsp_e2e import wait_until
from tests.conftest import agent_command, agent_env


def test_config_file_without_cameras_starts_no_camera(tmp_path: Path, media_dir: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "vtest.avi").symlink_to(media_dir / "vtest.avi")
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        '[node]\nid = "node-07"\n[paths]\nstate_dir = "var"\n'
        '[[sensors]]\nkind = "simulated"\nname = "sim-1"\ninterval_s = 0.2\n'
    )
    agent = subprocess.Popen(
        agent_command("run", "--config", str(config)),
        cwd=tmp_path,
        env=agent_env(EDGE_AGENT_WEB__PORT="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # A reading in the outbox proves the agent runs with this config.
        events = wait_until(
            tmp_path / "var" / "outbox.sqlite3",
            agent,
            lambda ev: any(e["kind"] == "reading" for e in ev),
            "a reading from the simulated sensor",
        )
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=30)
    finally:
        agent.kill()
        if agent.stdout is not None:
            agent.stdout.close()
    assert agent.returncode == 0, output
    assert "started sensor:sim-1" in output
    assert "capture:" not in output and "inference" not in output, output
    assert not [e for e in events if e["kind"] in ("camera", "detection", "count")]
