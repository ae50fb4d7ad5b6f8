"""/metrics of a running agent (a camera with the real detector, a sensor, a link that is
down): parsed by prometheus_client's parser and checked by `promtool check metrics`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, free_port
from tests.web.conftest import RunningAgent, StartAgent, require_file

pytestmark = pytest.mark.slow

COUNTERS = {
    "edge_agent_outbox_written_rows",
    "edge_agent_outbox_acked_rows",
    "edge_agent_outbox_dropped_rows",
    "edge_agent_sync_connects",
    "edge_agent_sync_connect_failures",
    "edge_agent_camera_frames_analysed",
    "edge_agent_camera_frames_dropped",
    "edge_agent_sensor_readings",
    "edge_agent_sensor_read_errors",
    "edge_agent_web_logins",
}
GAUGES = {
    "edge_agent_outbox_pending_rows",
    "edge_agent_outbox_pending_bytes",
    "edge_agent_outbox_oldest_pending_age_seconds",
    "edge_agent_camera_analysed_frames_per_second",
    "edge_agent_host_cpu_usage_ratio",
    "edge_agent_verdict",
    "edge_agent_component_state",
}


@pytest.fixture
def agent(start_agent: StartAgent, tmp_path: Path, clip: Path) -> RunningAgent:
    model = require_file(REPO / "models" / "nanodet.onnx", "run scripts/build-model")
    running = start_agent(
        f"""
[paths]
state_dir = "{tmp_path / "state"}"
model_dir = "{model.parent}"
[mqtt]
host = "127.0.0.1"
port = {free_port()}
backoff_min_s = 0.2
backoff_max_s = 1.0
[[sensors]]
kind = "simulated"
name = "sim-1"
interval_s = 0.5
quantities = ["temperature"]
[[cameras]]
name = "gate"
source = "{clip}"
fps = 2.0
loop = true
""",
        mqtt=True,
    )
    # Wait until the detector has run a few times and the link has failed once.
    running.wait_for(lambda: _sample(running, "edge_agent_detector_latency_seconds_count") >= 3)
    running.wait_for(lambda: _sample(running, "edge_agent_sync_connect_failures_total") >= 1)
    # And until the outbox's writes to the device have been counted over more than a second.
    running.wait_for(lambda: _has(running, "edge_agent_outbox_flash_wear_bytes_per_day"))
    return running


def _has(agent: RunningAgent, name: str) -> bool:
    text = agent.get("/metrics")[2].decode()
    return any(s.name == name for f in text_string_to_metric_families(text) for s in f.samples)


def _on_tmpfs(path: Path) -> bool:
    """Whether `path` lies on a filesystem without a device (the kernel counts no writes)."""
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
            best, kind = mount, fstype
    return kind in ("tmpfs", "ramfs")


def _sample(agent: RunningAgent, name: str) -> float:
    """The sum of the samples called `name` in the agent's /metrics now."""
    text = agent.get("/metrics")[2].decode()
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )


def test_metrics_parse_and_pass_promtool(
    agent: RunningAgent, promtool: str, tmp_path: Path
) -> None:
    status, headers, body = agent.get("/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in COUNTERS:
        assert families[name].type == "counter", name
        assert all(s.name == f"{name}_total" for s in families[name].samples), name
    for name in GAUGES:
        assert families[name].type == "gauge", name
        assert families[name].samples, name
    latency = families["edge_agent_detector_latency_seconds"]
    assert latency.type == "histogram"
    buckets = [s for s in latency.samples if s.name.endswith("_bucket")]
    assert buckets[-1].labels == {"camera": "gate", "le": "+Inf"}
    assert buckets[-1].value >= 3
    assert all(f.documentation for f in families.values())
    verdict = {s.labels["state"]: s.value for s in families["edge_agent_verdict"].samples}
    assert sum(verdict.values()) == 1
    reasons = {s.labels["code"] for s in families["edge_agent_reason"].samples}
    assert "broker_unreachable" in reasons
    written = families["edge_agent_outbox_disk_written_bytes"]
    per_hour = families["edge_agent_outbox_disk_write_rate_bytes_per_hour"].samples[0].value
    per_day = families["edge_agent_outbox_flash_wear_bytes_per_day"].samples[0].value
    assert written.type == "counter" and per_day == pytest.approx(per_hour * 24)
    if not _on_tmpfs(tmp_path):  # a real device: the outbox's WAL and checkpoints are counted
        assert written.samples[0].value > 0 and per_hour > 0
    outbox = json.loads(agent.get("/api/status")[2])["outbox"]
    assert isinstance(outbox["disk_write_bytes_per_hour"], int)
    assert outbox["flash_wear_gb_per_day"] == pytest.approx(
        outbox["disk_write_bytes_per_hour"] * 24 / 1e9, abs=1e-3
    )
    readings = families["edge_agent_sensor_readings"].samples
    assert readings[0].labels == {"sensor": "sim-1"} and readings[0].value > 0

    check = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert check.returncode == 0 and not check.stdout and not check.stderr, (
        check.stdout.decode() + check.stderr.decode()
    )


def test_openmetrics_when_asked(agent: RunningAgent) -> None:
    status, headers, body = agent.get(
        "/metrics", Accept="application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.rstrip().endswith(b"# EOF")
    assert b"# UNIT edge_agent_outbox_pending_bytes bytes" in body
