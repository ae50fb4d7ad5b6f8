"""The status page, its JSON API, /healthz and /metrics on a real server and a real browser."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from edge_agent.config import WebConfig
from edge_agent.health import HealthRegistry, Role, State, reason
from edge_agent.web.server import StatusServer
from tests.conftest import agent_command, agent_env, free_port, require_binary, wait_for_port


def _status(registry: HealthRegistry) -> dict[str, object]:
    return {
        "node": {"id": "n1", "district": "d1", "province": "p1"},
        "state": registry.overall().value,
        "reasons": [f.to_dict() for f in registry.verdict().findings],
        "time": 0,
        "components": registry.snapshot(),
        "outbox": {"pending_rows": 3},
        "host": {"cpu_percent": 12.5},
    }


@pytest.mark.asyncio
async def test_json_healthz_and_metrics() -> None:
    registry = HealthRegistry()
    sensor = registry.register("sensor:aq-1", kind="sensor", role=Role.SOURCE)
    sensor.set_state(State.OK)
    sensor.progress("readings", 4)
    outbox = registry.register("outbox", kind="outbox")
    outbox.set_facts(pending_rows=12, oldest_pending_age_s=3.5, epoch="ab12")
    server = StatusServer(
        WebConfig(port=0), status=lambda: _status(registry), health=registry.register("web")
    )
    async with server, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{server.port}"
        async with session.get(f"{base}/api/status") as response:
            body = await response.json()
            assert body["outbox"]["pending_rows"] == 3
            assert [c["name"] for c in body["components"]] == ["sensor:aq-1", "outbox", "web"]
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/metrics") as response:
            text = await response.text()
            assert (
                'edge_agent_component_counter{component="sensor:aq-1",counter="readings"} 4' in text
            )
            assert 'edge_agent_component_state{component="web",state="ok"} 1' in text
            assert 'edge_agent_component_fact{component="outbox",fact="pending_rows"} 12' in text
            assert "ab12" not in text  # text facts are not metrics
        sensor.set_state(State.FAILING, reason("no_answer", "no answer"), error="no answer")
        async with session.get(f"{base}/healthz") as response:
            # The only sensor down: no data flows, so the node is failing.
            assert response.status == 503
            body = await response.json()
            assert body["state"] == "failing"
            assert {r["code"] for r in body["reasons"]} == {
                "all_sensors_down",
                "no_answer",
                "starting",
            }


@pytest.mark.asyncio
async def test_busy_port_is_a_clear_error() -> None:
    registry = HealthRegistry()
    first = StatusServer(WebConfig(port=0), status=lambda: {}, health=registry.register("a"))
    async with first:
        second = StatusServer(
            WebConfig(port=first.port or 0), status=lambda: {}, health=registry.register("b")
        )
        with pytest.raises(Exception, match=r"cannot listen on 127\.0\.0\.1:\d+"):
            await second.__aenter__()


@pytest.fixture
def running_agent(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    agent = subprocess.Popen(
        agent_command("run"),
        cwd=tmp_path,
        env=agent_env(EDGE_AGENT_WEB__PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout_s=30)
        yield port
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=15)


def render(url: str, profile: Path) -> str:
    chromium = require_binary("chromium", package="chromium")
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_page_in_a_real_browser_vietnamese_then_english(running_agent: int, tmp_path: Path) -> None:
    dom = render(f"http://127.0.0.1:{running_agent}/", tmp_path / "profile")
    assert '<html lang="vi">' in dom
    banner = re.search(r'<div id="banner" class="banner (\w+)"[^>]*>([^<]+)</div>', dom)
    assert banner is not None, dom
    assert banner.group(1) in {"ok", "degraded"}
    assert banner.group(2) in {"Hoạt động tốt", "Có vấn đề"}
    assert "Chờ gửi" in dom
    assert "sensor:sim-1" in dom
    english = render(f"http://127.0.0.1:{running_agent}/?lang=en", tmp_path / "profile2")
    assert '<html lang="en">' in english
    assert "Waiting to send" in english
    assert "sensor:host" in english


def test_page_says_when_the_node_cannot_be_reached(tmp_path: Path) -> None:
    # The page file alone, opened without its server: the fetch fails and the page says so.
    page = Path(__file__).resolve().parents[2] / "edge_agent" / "web" / "static" / "index.html"
    dom = render(page.as_uri(), tmp_path / "profile")
    assert "Không kết nối được với thiết bị" in dom
