"""Every route of the status server, over HTTP, against a running agent on a free port:
headers, the access code and its rate limit, the JSON against its schema, path traversal,
secrets, gzip, and the header and body deadlines."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from jsonschema import Draft202012Validator

from edge_agent.outbox import OutboxReader
from tests.conftest import REPO, free_port, stop_process
from tests.web.conftest import ACCESS_CODE, RunningAgent, launch_agent

pytestmark = pytest.mark.asyncio

SCHEMA = json.loads((REPO / "edge_agent" / "schema" / "status.schema.json").read_text())
SECRET = "hunter2-SECRET-9f3a"
PUBLIC_ROUTES = [
    "/",
    "/static/app.js",
    "/static/style.css",
    "/static/icon.svg",
    "/i18n/vi.json",
    "/i18n/en.json",
    "/api/status",
    "/healthz",
    "/metrics",
]
PROTECTED_ROUTES = ["/api/events", "/api/config", "/camera/gate/thumbnail.jpg"]
TRAVERSALS = [
    "/static/../server.py",
    "/static/..%2fserver.py",
    "/static/%2e%2e%2fserver.py",
    "/static/..%2f..%2fconfig%2fsettings.py",
    "/static/i18n%2fvi.json",
    "/static/index.html",
    "/i18n/..%2f..%2fserver.json",
    "/i18n/../static/app.js",
    "/camera/..%2f..%2fetc/thumbnail.jpg",
    "/camera/gate/..%2f..%2foutbox.sqlite3",
    "//etc/passwd",
    "/static/%00app.js",
]


def node_config(tmp: Path, clip: Path, access_code_hash: str, broker_port: int) -> str:
    return f"""
[node]
id = "web-node"
district = "d1"
province = "p1"
[paths]
state_dir = "{tmp / "state"}"
model_dir = "{tmp / "no-model"}"
[mqtt]
host = "127.0.0.1"
port = {broker_port}
username = "node"
password = "{SECRET}"
backoff_min_s = 0.2
backoff_max_s = 1.0
[[sensors]]
kind = "simulated"
name = "sim-1"
label = "Trạm chợ Đông Ba"
interval_s = 0.5
quantities = ["temperature", "pm2_5"]
[[cameras]]
name = "gate"
label = "Camera cổng chính"
source = "{clip}"
fps = 1.0
loop = true
[web]
access_code_hash = "{access_code_hash}"
login_attempts = 3
login_window_s = 600
header_timeout_s = 2
body_timeout_s = 1
refresh_s = 2
"""


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, clip: Path, access_code_hash: str
) -> Iterator[RunningAgent]:
    tmp = tmp_path_factory.mktemp("web-node")
    # A port nobody listens on: the link stays down (and no test reaches 1883).
    agent = launch_agent(
        tmp / "agent", node_config(tmp, clip, access_code_hash, free_port()), mqtt=True
    )
    # Wait until the camera has a frame and the link has failed once: every section is real.
    agent.wait_for(lambda: b'"online": true' in agent.get("/api/status")[2])
    agent.wait_for(lambda: b"broker_unreachable" in agent.get("/healthz")[2])
    agent.wait_for(lambda: json.loads(agent.get("/api/status")[2])["sync"]["pending_rows"] > 0)
    yield agent
    stop_process(agent.process)


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: keep cookies from an IP address host (the page is reached by IP).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield s


def assert_security_headers(headers: Any) -> None:
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    assert "Access-Control-Allow-Origin" not in headers


async def login(session: aiohttp.ClientSession, node: RunningAgent, code: str) -> int:
    async with session.post(f"{node.base}/login", json={"code": code}) as response:
        assert_security_headers(response.headers)
        assert response.headers["Cache-Control"] == "no-store"
        return response.status


async def test_every_public_route_answers_with_the_security_headers(
    node: RunningAgent, session: aiohttp.ClientSession
) -> None:
    for route in PUBLIC_ROUTES:
        async with session.get(node.base + route, headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 200, route
            assert_security_headers(r.headers)
            assert await r.read()
    async with session.get(f"{node.base}/") as r:
        assert r.headers["Content-Type"].startswith("text/html")
        page = await r.text()
        assert '<script src="static/app.js" defer></script>' in page
        assert "<script>" not in page and "style=" not in page  # nothing inline
        assert 'data-lang="vi"' in page
    async with session.get(f"{node.base}/no/such/page") as r:
        assert r.status == 404
        assert_security_headers(r.headers)
    async with session.options(f"{node.base}/api/status") as r:
        assert r.status == 405  # no CORS preflight
        assert "Access-Control-Allow-Origin" not in r.headers
    async with session.request("PUT", f"{node.base}/api/status") as r:
        assert r.status == 405


async def test_status_json_follows_its_schema_and_says_no_free_text(
    node: RunningAgent, session: aiohttp.ClientSession
) -> None:
    validator = Draft202012Validator(SCHEMA)
    async with session.get(f"{node.base}/api/status") as r:
        assert r.headers["Cache-Control"] == "no-store"
        text = await r.text()
    status = json.loads(text)
    errors = sorted(validator.iter_errors(status), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    assert status["node"] == {
        "id": "web-node",
        "district": "d1",
        "province": "p1",
        "version": status["node"]["version"],
        "config_hash": status["node"]["config_hash"],
    }
    assert status["verdict"] in ("degraded", "failing")
    codes = {r["code"] for r in status["reasons"]}
    assert "broker_unreachable" in codes and "model_unavailable" in codes
    link = next(r for r in status["reasons"] if r["code"] == "broker_unreachable")
    # Public: no broker address, no English sentence, no error text.
    assert "broker" not in link["params"] and "text" not in link
    assert isinstance(link["params"]["since"], float)
    assert all("last_error" not in c for c in status["components"])
    assert "127.0.0.1" not in text and SECRET not in text
    (sensor,) = status["sensors"]
    assert sensor["label"] == "Trạm chợ Đông Ba"
    assert {v["quantity"] for v in sensor["values"]} == {"temperature", "pm2_5"}
    assert {v["unit"] for v in sensor["values"]} == {"Cel", "ug/m3"}
    (camera,) = status["cameras"]
    assert camera["label"] == "Camera cổng chính" and camera["online"] is True
    assert camera["fps_target"] == 1.0 and "thumbnail" not in camera
    assert status["sync"]["enabled"] is True and status["sync"]["connected"] is False
    assert status["sync"]["pending_rows"] > 0
    assert status["access"] == {"configured": True, "logged_in": False}


async def test_protected_routes_need_the_access_code(
    node: RunningAgent, session: aiohttp.ClientSession
) -> None:
    for route in PROTECTED_ROUTES:
        async with session.get(node.base + route) as r:
            assert r.status == 401, route
            assert (await r.json())["error"] == "login_required"
            assert r.headers["Cache-Control"] == "no-store"
            assert_security_headers(r.headers)
    assert await login(session, node, ACCESS_CODE) == 200
    cookie = next(c for c in session.cookie_jar if c.key == "edge_agent_session")
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    async with session.get(f"{node.base}/camera/gate/thumbnail.jpg") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/jpeg"
        assert r.headers["Cache-Control"] == "no-store, private"
        assert (await r.read())[:3] == b"\xff\xd8\xff"
    async with session.get(f"{node.base}/camera/nosuch/thumbnail.jpg") as r:
        assert r.status == 404
    async with session.get(f"{node.base}/api/config") as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        config = await r.json()
        assert config["mqtt"]["password"] == "**********"
        assert config["web"]["access_code_hash"] == "**********"
        assert SECRET not in json.dumps(config)
    async with session.get(f"{node.base}/api/events") as r:
        assert r.status == 200
        events = await r.json()
        assert any(e["kind"] == "camera" for e in events["events"])
        assert isinstance(events["log"], list)
    async with session.get(f"{node.base}/api/status") as r:
        status = await r.json()
    Draft202012Validator(SCHEMA).validate(status)
    assert status["access"] == {"configured": True, "logged_in": True}
    assert status["cameras"][0]["thumbnail"]["url"] == "camera/gate/thumbnail.jpg"
    # Details for the staff in charge: the English texts and errors, still no secret.
    assert any("last_error" in c for c in status["components"])
    assert SECRET not in json.dumps(status)
    async with session.post(f"{node.base}/logout") as r:
        assert r.status == 200
    async with session.get(f"{node.base}/api/events") as r:
        assert r.status == 401


async def test_wrong_codes_are_rate_limited_per_client_and_audited(
    tmp_path: Path, clip: Path, access_code_hash: str, session: aiohttp.ClientSession
) -> None:
    agent = launch_agent(tmp_path / "agent", node_config(tmp_path, clip, access_code_hash, 9))
    try:
        for _ in range(3):
            assert await login(session, agent, "not-the-code") == 401
        async with session.post(f"{agent.base}/login", json={"code": ACCESS_CODE}) as r:
            # Even the right code waits: nothing is hashed past the limit.
            assert r.status == 429
            assert int(r.headers["Retry-After"]) > 0
            assert (await r.json())["error"] == "rate_limited"
        async with session.post(
            f"{agent.base}/login",
            json={"code": ACCESS_CODE},
            headers={"Origin": "http://evil.example"},
        ) as r:
            assert r.status == 403  # another site cannot log a phone in
        async with session.get(f"{agent.base}/metrics") as r:
            metrics = await r.text()
        assert 'edge_agent_web_logins_total{outcome="wrong_code"} 3.0' in metrics
        assert 'edge_agent_web_logins_total{outcome="rate_limited"} 1.0' in metrics
    finally:
        stop_process(agent.process)
    log = agent.log()
    assert "audit: login_failed wrong_code from 127.0.0.1" in log
    assert "audit: login_failed rate_limited from 127.0.0.1" in log
    assert ACCESS_CODE not in log and "not-the-code" not in log
    # For the province's security centre: audit events committed for the IOC.
    with OutboxReader(tmp_path / "state" / "outbox.sqlite3") as reader:
        events = [json.loads(row.payload) for row in reader.export(0)]
    audits = {(e["data"]["event"], e["data"]["code"]) for e in events if e["kind"] == "audit"}
    assert {("login_failed", "wrong_code"), ("login_rate_limited", "rate_limited")} <= audits
    assert {("login_failed", "cross_origin")} <= audits


async def test_paths_cannot_leave_their_folder(
    node: RunningAgent, session: aiohttp.ClientSession
) -> None:
    assert await login(session, node, ACCESS_CODE) == 200
    cookie = next(c for c in session.cookie_jar if c.key == "edge_agent_session").value
    for route in TRAVERSALS:
        # Raw, so that no client normalises the dots away before the server sees them.
        request = (
            f"GET {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: edge_agent_session={cookie}"
            "\r\nConnection: close\r\n\r\n"
        ).encode()
        reply = await asyncio.to_thread(_raw, node.port, request)
        status = reply.split(b" ", 2)[1]
        assert status in (b"400", b"404"), (route, reply[:300])
        assert b"import " not in reply and b"root:" not in reply and b"SQLite" not in reply


async def test_gzip_etag_and_page_weight(
    node: RunningAgent, session: aiohttp.ClientSession
) -> None:
    total = 0
    for route in ["/", "/static/style.css", "/static/app.js", "/static/icon.svg", "/i18n/vi.json"]:
        async with session.get(
            node.base + route, headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        ) as r:
            body = await r.read()
            assert r.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(body)
            total += len(body)
            etag = r.headers["ETag"]
        async with session.get(node.base + route, headers={"If-None-Match": etag}) as r:
            assert r.status == 304
    async with session.get(
        f"{node.base}/api/status", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    ) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        total += len(await r.read())
    assert total < 60_000, f"first load is {total} bytes compressed"


def _raw(port: int, data: bytes) -> bytes:
    """Send `data`, then read until the server answers or closes (a round trip)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


async def test_a_half_sent_header_or_body_is_cut_off(node: RunningAgent) -> None:
    # Half a header: the server closes the connection after header_timeout_s, no answer.
    reply = await asyncio.to_thread(_raw, node.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert reply == b""
    # A login body announced and never finished: refused after body_timeout_s.
    reply = await asyncio.to_thread(
        _raw,
        node.port,
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 40\r\nConnection: close\r\n\r\n{"code":',
    )
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert "status page: connections closed" in node.log()
