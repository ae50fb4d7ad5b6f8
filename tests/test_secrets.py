"""Secrets never leave the node: a password in an RTSP URL, userinfo and an `api_key` in an
HTTP sensor's URL and the broker password are planted in the config, then every output
surface is searched for them: check-config, config.get's data, the agent's log, the status
API and page, /metrics, and every event it committed for the IOC."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from edge_agent.config import effective_config, load_settings
from edge_agent.outbox import OutboxReader
from edge_agent.web.access import AccessCode
from tests.conftest import AgentProcess, agent_command, agent_env, free_port

PLANTED = ("Rtsp-Pw-1111", "Http-Pw-2222", "Api-Key-3333", "Broker-Pw-4444", "Tok-5555")
ACCESS_CODE = "field-staff-1234"


def config_text(tmp_path: Path, http_port: int, model_dir: Path) -> str:
    closed = free_port()  # nothing listens there: the camera fails to open, naming its URL
    return f"""
[paths]
state_dir = "{tmp_path / "state"}"
model_dir = "{model_dir}"
[web]
port = {free_port()}
access_code_hash = "{AccessCode.create(ACCESS_CODE).encode()}"
[mqtt]
enabled = false
username = "node"
password = "{PLANTED[3]}"
[[sensors]]
kind = "http_json"
name = "city-aq"
interval_s = 0.2
timeout_s = 1.0
url = "http://user:{PLANTED[1]}@127.0.0.1:{http_port}/aq?api_key={PLANTED[2]}&access_token={PLANTED[4]}&city=hue"
values = [{{pointer = "/pm25", quantity = "pm2_5", unit = "ug/m3"}}]
[[cameras]]
name = "gate"
source = "rtsp://admin:{PLANTED[0]}@127.0.0.1:{closed}/stream1"
fps = 1.0
open_timeout_s = 1.0
backoff_max_s = 1.0
"""


def assert_clean(surface: str, text: str) -> None:
    for secret in PLANTED:
        assert secret not in text, f"{secret} leaked through {surface}:\n{text[:2000]}"


def fetch(url: str, opener: urllib.request.OpenerDirector | None = None) -> str:
    with (opener or urllib.request.build_opener()).open(url, timeout=30) as answer:
        return str(answer.read().decode())


def logged_in(base: str) -> urllib.request.OpenerDirector:
    """A client holding the page's session cookie: it sees the details (reason texts)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    request = urllib.request.Request(
        f"{base}/login",
        data=json.dumps({"code": ACCESS_CODE}).encode(),
        headers={"Content-Type": "application/json", "Origin": base},
        method="POST",
    )
    with opener.open(request, timeout=30) as answer:
        assert answer.status == 200
    return opener


def committed_events(db: Path) -> str:
    with OutboxReader(db) as reader:
        return "\n".join(row.payload.decode() for row in reader.export(0))


def eventually(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


class FailingApi(BaseHTTPRequestHandler):
    """An HTTP sensor API that always fails: its errors are what quote the URL."""

    def do_GET(self) -> None:
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"down")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_no_output_surface_carries_a_secret(
    tmp_path: Path, agent_process: Callable[..., AgentProcess]
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailingApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    http_port = server.server_address[1]
    try:
        config = tmp_path / "edge-agent.toml"
        model_dir = Path(__file__).resolve().parent.parent / "models"
        config.write_text(config_text(tmp_path, http_port, model_dir))
        settings = load_settings(config)
        port = settings.web.port

        checked = subprocess.run(
            agent_command("check-config", "--config", str(config)),
            env=agent_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert_clean("check-config", checked.stdout + checked.stderr)
        # What config.get answers with.
        assert_clean("config.get", json.dumps(effective_config(settings)))

        agent = agent_process("run", "--config", str(config), "--log-level", "DEBUG")
        base = f"http://127.0.0.1:{port}"
        db = tmp_path / "state" / "outbox.sqlite3"

        def failures_seen() -> bool:
            try:
                status = json.loads(fetch(f"{base}/api/status"))
            except OSError:
                return False
            states = {c["name"]: c["state"] for c in status["components"]}
            return (
                states.get("sensor:city-aq") == "failing"
                and states.get("camera:gate") in ("degraded", "failing")
                and db.exists()
                and '"camera":"gate"' in committed_events(db)
                and '"sensor":"city-aq"' in committed_events(db)
            )

        eventually(failures_seen)
        assert_clean("/api/status", fetch(f"{base}/api/status"))
        # Logged in, the page sees the error texts: they are there, only masked.
        status = fetch(f"{base}/api/status", logged_in(base))
        assert "**********" in status
        assert_clean("/api/status after login", status)
        assert_clean("/", fetch(f"{base}/"))
        assert_clean("/metrics", fetch(f"{base}/metrics"))
        assert_clean("events for the IOC", committed_events(db))
        assert agent.stop() == 0
        assert "127.0.0.1" in agent.output  # the log does talk about the URLs
        assert_clean("the log", agent.output)
    finally:
        server.shutdown()
        server.server_close()
