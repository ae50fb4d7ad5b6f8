"""End to end: a real RTSP server streams vtest.avi as H.264; `edge-agent run` captures it,
detects people and commits `camera`, `detection` and `count` events to its outbox.
Stopping the server takes the camera offline; restarting it brings it back online with a
coverage-gap record."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import StorageError
from edge_agent.outbox import OutboxReader
from tests.camera.conftest import RtspServer
from tests.conftest import agent_command, agent_env
from tests.sync.schema import validate

pytestmark = pytest.mark.slow


def outbox_events(db: Path) -> list[dict[str, Any]]:
    """Every pending event in the agent's outbox, read as the CLI reads it (a read's
    readings share one packed row)."""
    if not db.exists():
        return []
    try:
        with OutboxReader(db) as reader:
            return [json.loads(row.payload) for row in reader.export(0)]
    except (StorageError, sqlite3.OperationalError):  # the agent is creating the file
        return []


def wait_until(
    db: Path,
    agent: subprocess.Popen[str],
    predicate: Callable[[list[dict[str, Any]]], bool],
    what: str,
    timeout_s: float = 60,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        assert agent.poll() is None, f"agent exited with {agent.returncode}"
        events = outbox_events(db)
        if predicate(events):
            return events
        time.sleep(0.25)
    raise AssertionError(f"no {what} within {timeout_s} s; outbox holds {events}")


def camera_states(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["data"]["state"]
        for e in events
        if e["kind"] == "camera" and e["data"].get("event") == "state"
    ]


def test_rtsp_camera_end_to_end(tmp_path: Path, rtsp_server: RtspServer, model_dir: Path) -> None:
    config = tmp_path / "edge-agent.toml"
    config.write_text(
        f"""
sensors = []
[node]
id = "node-e2e"
[paths]
state_dir = "{tmp_path / "state"}"
model_dir = "{model_dir}"
[web]
enabled = false
[[cameras]]
name = "street"
source = "{rtsp_server.url}"
fps = 5.0
open_timeout_s = 5.0
read_timeout_s = 3.0
backoff_max_s = 2.0
count_interval_s = 5.0
[[cameras.lines]]
name = "middle"
points = [[0.0, 0.45], [1.0, 0.45]]
"""
    )
    db = tmp_path / "state" / "outbox.sqlite3"
    agent = subprocess.Popen(
        agent_command("run", "--config", str(config)),
        cwd=tmp_path,
        env=agent_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        events = wait_until(
            db,
            agent,
            lambda ev: any(
                e["kind"] == "count" and e["data"].get("objects", {}).get("person", 0) > 0
                for e in ev
            ),
            "count event with people",
        )
        assert camera_states(events)[0] == "online"
        people = [
            e["data"] for e in events if e["kind"] == "detection" and e["data"]["label"] == "person"
        ]
        assert people, events
        first = people[0]
        assert first["camera"] == "street" and first["zone"] == "frame"
        assert first["frame_size"] == [768, 576]
        x1, y1, x2, y2 = first["box"]
        assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576
        assert (tmp_path / "state" / "snapshots" / "street" / first["snapshot"]).is_file()
        assert len({p["track_id"] for p in people}) == len(people)  # one event per entry

        rtsp_server.stop()
        events = wait_until(
            db, agent, lambda ev: camera_states(ev)[-1:] == ["offline"], "offline event"
        )

        rtsp_server.start()
        events = wait_until(
            db,
            agent,
            lambda ev: any(
                e["kind"] == "camera" and e["data"].get("event") == "coverage_gap" for e in ev
            ),
            "coverage gap after the server came back",
        )
        assert camera_states(events) == ["online", "offline", "online"]
        gap = next(e for e in events if e["data"].get("event") == "coverage_gap")
        offline_at = next(
            e["ts"] for e in events if e["kind"] == "camera" and e["data"].get("state") == "offline"
        )
        assert gap["data"]["from"] == offline_at
        assert gap["data"]["to"] > gap["data"]["from"]
        assert gap["data"]["duration_s"] > 0

        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=30)
    finally:
        agent.kill()
    assert agent.returncode == 0, output
    events = outbox_events(db)
    # The unfinished counting interval is flushed at shutdown: nothing counted is lost.
    assert events[-1]["kind"] == "count", events[-2:]
    lines = [e["data"] for e in events if e["kind"] == "count" and "line" in e["data"]]
    assert lines and all(set(c["crossings"]) == {"in", "out"} for c in lines)
    # Everything the camera pipeline committed follows the published contract, kind by kind.
    kinds = {e["kind"] for e in events}
    assert {"camera", "detection", "count"} <= kinds
    for event in events:
        validate("envelope", event)
