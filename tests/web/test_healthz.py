"""/healthz on a running agent: 503 with the reason when every camera is offline, when the
broker has been unreachable past web.unhealthy_after_s, and when the outbox cannot write;
200 again after each recovers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker
from tests.web.conftest import RunningAgent, StartAgent

pytestmark = pytest.mark.slow

UNHEALTHY_AFTER_S = 10


def health(agent: RunningAgent) -> tuple[int, dict[str, Any]]:
    status, headers, body = agent.get("/healthz")
    assert headers["Cache-Control"] == "no-store"
    return status, json.loads(body)


def failing_because(agent: RunningAgent, code: str) -> bool:
    status, body = health(agent)
    return status == 503 and any(
        r["code"] == code and r["severity"] == "failing" for r in body["reasons"]
    )


def healthy(agent: RunningAgent) -> bool:
    status, body = health(agent)
    return status == 200 and body["verdict"] in ("ok", "degraded")


def test_healthz_fails_and_recovers(
    start_agent: StartAgent, broker: Broker, tmp_path: Path, clip: Path
) -> None:
    camera_file = tmp_path / "camera" / "clip.avi"
    camera_file.parent.mkdir()
    state = tmp_path / "state"
    agent = start_agent(
        f"""
[paths]
state_dir = "{state}"
model_dir = "{tmp_path / "no-model"}"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
keepalive_s = 5
backoff_min_s = 0.2
backoff_max_s = 1.0
[outbox]
writer_stall_s = 3
[[sensors]]
kind = "simulated"
name = "sim-1"
interval_s = 0.5
quantities = ["temperature"]
[[cameras]]
name = "gate"
source = "{camera_file}"
fps = 1.0
loop = true
backoff_max_s = 1
[web]
unhealthy_after_s = {UNHEALTHY_AFTER_S}
""",
        mqtt=True,
    )

    # The only camera's file is not there: every camera is down, no pictures flow.
    agent.wait_for(lambda: failing_because(agent, "all_cameras_down"))
    _, body = health(agent)
    assert {"camera_offline", "all_cameras_down"} <= {r["code"] for r in body["reasons"]}
    camera_file.symlink_to(clip)
    agent.wait_for(lambda: healthy(agent))

    # The broker goes away: degraded at first (the outbox keeps everything), failing once
    # it has been unreachable for longer than web.unhealthy_after_s.
    broker.stop()
    agent.wait_for(lambda: health(agent)[1]["verdict"] == "degraded")
    assert health(agent)[0] == 200
    agent.wait_for(lambda: failing_because(agent, "broker_unreachable"))
    _, body = health(agent)
    link = next(r for r in body["reasons"] if r["code"] == "broker_unreachable")
    assert link["component"] == "sync" and isinstance(link["params"]["since"], float)
    broker.start()
    agent.wait_for(lambda: healthy(agent))

    # Another process holds the outbox's write lock (a technician's sqlite3 shell left in a
    # transaction): the writer cannot commit, and the node says so.
    holder = sqlite3.connect(state / "outbox.sqlite3", isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        agent.wait_for(lambda: failing_because(agent, "writer_stalled"))
        _, body = health(agent)
        assert any(r["component"] == "outbox" for r in body["reasons"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    agent.wait_for(lambda: healthy(agent))
