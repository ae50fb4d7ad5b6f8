"""scripts/demo stops the agent and its broker together, however it is stopped: SIGTERM or
SIGINT to the script's PID alone, or Ctrl-C (SIGINT to the whole process group). Nothing
may be left running and both ports must be free again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, agent_env, free_port, require_binary


def sync_state(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as answer:
            status = json.loads(answer.read())
    except OSError:
        return None
    return next((c["state"] for c in status["components"] if c["name"] == "sync"), None)


def port_free(port: int) -> bool:
    try:
        with socket.create_server(("127.0.0.1", port)):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("how", ["sigterm-to-pid", "sigint-to-pid", "ctrl-c-to-group"])
def test_demo_stops_agent_and_broker_together(tmp_path: Path, how: str) -> None:
    require_binary("mosquitto", package="mosquitto")
    mqtt_port, web_port = free_port(), free_port()
    env = agent_env(
        mqtt=True,
        EDGE_AGENT_MQTT__PORT=str(mqtt_port),
        EDGE_AGENT_WEB__PORT=str(web_port),
        EDGE_AGENT_PATHS__STATE_DIR=str(tmp_path / "state"),
    )
    demo = subprocess.Popen(
        [str(REPO / "scripts" / "demo"), "--no-setup"],
        env=env,
        start_new_session=True,  # the script leads its own process group, as in a terminal
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        # Running means: the page answers and the agent is connected to the demo's broker.
        while sync_state(web_port) != "ok":
            assert demo.poll() is None, demo.communicate()[0]
            assert time.monotonic() < deadline, "the demo never came up"
            time.sleep(0.2)
        if how == "ctrl-c-to-group":
            os.killpg(demo.pid, signal.SIGINT)
        else:
            demo.send_signal(signal.SIGTERM if how == "sigterm-to-pid" else signal.SIGINT)
        output, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()
    assert demo.returncode == 0, output
    assert "local broker on 127.0.0.1:" in output and "stopped" in output, output
    with pytest.raises(ProcessLookupError):
        os.killpg(demo.pid, 0)  # nothing is left in the script's process group
    assert port_free(mqtt_port) and port_free(web_port)
    broker_log = (tmp_path / "state" / "demo-broker" / "mosquitto.log").read_text()
    assert "mosquitto version" in broker_log and "Error" not in broker_log, broker_log
