"""The status server's parts on their own: the sparkline ring, today's counts, the problem
history, the access code, sessions and the login limit, the public params filter, the
accept-error filter, and the connection guard on a real server with real sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from edge_agent.config import CameraConfig, Settings, WebConfig
from edge_agent.contract import Kind
from edge_agent.errors import ConfigError
from edge_agent.health import Finding, HealthRegistry, Role, State, reason
from edge_agent.host import clock_synchronised
from edge_agent.web.access import AccessCode, AccessCodeFormatError, LoginLimiter, Sessions
from edge_agent.web.facts import NodeIdentity, NodeStatus, public_params
from edge_agent.web.guard import ACCEPT_ERROR, AcceptErrorFilter
from edge_agent.web.problems import ProblemLog
from edge_agent.web.recent import SPARK_POINTS, SPARK_STEP_S, Recent
from edge_agent.web.server import StatusServer
from tests.conftest import agent_command, agent_env


def test_sparkline_ring_keeps_six_hours_of_five_minute_means() -> None:
    recent = Recent()
    start = 1_800_000_000.0 - 1_800_000_000.0 % SPARK_STEP_S
    for minute in range(0, 8 * 60, 1):  # eight hours, one reading a minute
        data = {"sensor": "s1", "quantity": "temperature", "value": float(minute), "unit": "Cel"}
        recent.observe(Kind.READING, {**data, "quality": "ok"}, "s1", start + minute * 60)
    now = start + 8 * 3600 - 1
    (value,) = recent.sensor_values("s1", now)
    assert value["value"] == 479.0 and value["unit"] == "Cel"
    spark = value["spark"]
    assert spark["step_s"] == SPARK_STEP_S and len(spark["values"]) == SPARK_POINTS
    # The newest bucket holds minutes 475..479, the oldest kept the one 71 buckets before.
    assert spark["values"][-1] == 477.0
    assert spark["values"][0] == 477.0 - 5 * (SPARK_POINTS - 1)
    assert None not in spark["values"]
    # A bad value (null) is the last value shown, but never averaged into the line.
    recent.observe(
        Kind.READING,
        {"sensor": "s1", "quantity": "temperature", "value": None, "unit": "Cel", "quality": "bad"},
        "s1",
        now,
    )
    (value,) = recent.sensor_values("s1", now)
    assert value["value"] is None and value["quality"] == "bad"
    assert value["spark"]["values"][-1] == 477.0


def test_detections_counted_by_class_for_today_and_aqi_kept() -> None:
    recent = Recent()
    day = time.mktime((2026, 11, 30, 23, 59, 0, 0, 0, -1))
    for label in ("person", "person", "car"):
        recent.observe(
            Kind.DETECTION,
            {
                "camera": "gate",
                "zone": "frame",
                "label": label,
                "box": [1, 2, 3, 4],
                "frame_size": [10, 10],
                "snapshot": "a.jpg",
                "score": 0.9,
                "track_id": 1,
            },
            "gate",
            day,
        )
    activity = recent.cameras["gate"]
    assert activity.today_counts(day)["counts"] == {"person": 2, "car": 1}
    assert len(activity.last_frame) == 3  # the three boxes of that frame
    assert activity.today_counts(day + 120)["counts"] == {}  # past midnight: a new day
    recent.observe(
        Kind.DETECTION, {"camera": "gate", "zone": "frame", "label": "bus"}, "gate", day + 120
    )
    assert activity.today_counts(day + 120)["counts"] == {"bus": 1}
    assert activity.totals == {"person": 2, "car": 1, "bus": 1}
    recent.observe(
        Kind.READING,
        {
            "sensor": "aq-1",
            "quantity": "vn_aqi_hourly",
            "value": 123,
            "unit": "1",
            "quality": "ok",
            "category": "poor",
            "color": [255, 126, 0],
            "label_vi": "Kém",
        },
        "aq-1",
        day,
    )
    assert recent.air_quality["aq-1"]["color"] == [255, 126, 0]
    assert recent.sensor_values("aq-1", day) == []  # not a sensor line of its own


def _finding(component: str, code: str, severity: State = State.DEGRADED) -> Finding:
    return Finding(component, "sensor", severity, reason(code, code, failures=2))


def test_problem_history_starts_ends_and_escalates() -> None:
    log = ProblemLog(size=3, starting_grace_s=30)
    log.observe([_finding("sensor:a", "no_answer"), _finding("web", "starting")], now=100)
    assert [p["code"] for p in log.entries()] == ["no_answer"]  # starting: not yet a problem
    log.observe(
        [_finding("sensor:a", "no_answer", State.FAILING), _finding("web", "starting")], now=140
    )
    entries = log.entries()
    assert [p["code"] for p in entries] == ["starting", "no_answer"]
    assert entries[0]["time"] == 100 and entries[1]["severity"] == "failing"
    log.observe([], now=150)
    assert all(p["end"] == 150 for p in log.entries())
    for n in range(5):
        log.observe([_finding(f"sensor:{n}", "read_failed")], now=200 + n)
    assert len(log.entries()) == 3  # bounded


def test_access_code_hashes_verify_and_parse() -> None:
    code = AccessCode.create("cổng-4821")
    text = code.encode()
    assert text.startswith("scrypt$16384$8$1$")
    parsed = AccessCode.parse(text)
    assert parsed.verify("cổng-4821") and not parsed.verify("cổng-4822")
    assert not parsed.verify("") and not parsed.verify("x" * 1000)
    for bad in (
        "",
        "scrypt$1$8$1$AA==$AA==",
        "md5$abc",
        "scrypt$16384$8$1$!!$AA==",
        "pbkdf2-sha256$10$AA==$AA==",
    ):
        with pytest.raises(AccessCodeFormatError):
            AccessCode.parse(bad)
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"secret-code", salt, 200_000)
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    pbkdf2 = "$".join(["pbkdf2-sha256", "200000", *encoded])
    assert AccessCode.parse(pbkdf2).verify("secret-code")
    assert Settings(web=WebConfig(access_code_hash=text)).web.access_code_hash is not None
    with pytest.raises(ValueError, match=r"python -m edge_agent\.web\.access"):
        WebConfig(access_code_hash="plain-text-code")  # type: ignore[arg-type]


def test_access_code_command_prints_a_hash() -> None:
    result = subprocess.run(
        [*agent_command()[:1], "-m", "edge_agent.web.access"],
        input="cổng-4821\ncổng-4821\n",
        capture_output=True,
        text=True,
        env=agent_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert AccessCode.parse(result.stdout.strip()).verify("cổng-4821")
    assert "cổng-4821" not in result.stdout
    mismatch = subprocess.run(
        [sys.executable, "-m", "edge_agent.web.access"],
        input="cổng-4821\nother-code\n",
        capture_output=True,
        text=True,
        env=agent_env(),
        check=False,
    )
    assert mismatch.returncode == 1 and "differ" in mismatch.stderr


def test_sessions_expire_and_are_bounded() -> None:
    sessions = Sessions(ttl_s=60, max_sessions=2)
    first = sessions.open(now=0)
    assert sessions.valid(first, now=59) and not sessions.valid(first, now=61)
    a, b, c = sessions.open(now=0), sessions.open(now=0), sessions.open(now=0)
    assert not sessions.valid(a, now=1) and sessions.valid(b, now=1) and sessions.valid(c, now=1)
    sessions.close(b)
    assert not sessions.valid(b, now=1)
    assert not sessions.valid(None) and not sessions.valid("x" * 500)


def test_login_limit_per_client_within_a_window() -> None:
    limiter = LoginLimiter(attempts=3, window_s=60, max_clients=2)
    for t in (0, 1, 2):
        assert limiter.retry_after("10.0.0.5", now=t) == 0
        limiter.failed("10.0.0.5", now=t)
    assert limiter.retry_after("10.0.0.5", now=3) == pytest.approx(57)
    assert limiter.retry_after("10.0.0.6", now=3) == 0  # another client is not punished
    assert limiter.retry_after("10.0.0.5", now=61) == 0  # the oldest failure has aged out
    limiter.succeeded("10.0.0.5")
    assert limiter.retry_after("10.0.0.5", now=61) == 0
    for client in ("a", "b", "c"):
        limiter.failed(client, now=70)
    assert "a" not in limiter._failures  # bounded: the oldest client is forgotten


def test_public_params_keep_numbers_and_named_strings_only() -> None:
    params = {
        "since": 1.5,
        "failures": 3,
        "broker": "admin:pw@10.0.0.1:8883",
        "detail": "rtsp://u:p@cam",
        "component": "sensor:a",
        "ok": True,
        "none": None,
    }
    assert public_params(params, details=False) == {
        "since": 1.5,
        "failures": 3,
        "component": "sensor:a",
        "ok": True,
        "none": None,
    }
    assert public_params(params, details=True) == params


def test_accept_errors_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.asyncio.accept")
    accept_filter = AcceptErrorFilter(interval_s=60)
    logger.addFilter(accept_filter)
    try:
        with caplog.at_level(logging.ERROR, logger="test.asyncio.accept"):
            for _ in range(500):
                logger.error(ACCEPT_ERROR + "\nprotocol: x")
            logger.error("something else")
        assert [r.getMessage().splitlines()[0] for r in caplog.records] == [
            ACCEPT_ERROR,
            "something else",
        ]
        accept_filter._last = time.monotonic() - 61
        with caplog.at_level(logging.ERROR, logger="test.asyncio.accept"):
            logger.error(ACCEPT_ERROR)
        assert "499 more like it suppressed" in caplog.records[-1].getMessage()
    finally:
        logger.removeFilter(accept_filter)


def test_clock_synchronised_is_known_on_linux() -> None:
    assert clock_synchronised() in (True, False)


@pytest_asyncio.fixture
async def small_server(tmp_path: Path) -> AsyncIterator[StatusServer]:
    registry = HealthRegistry()
    registry.register("sensor:a", kind="sensor", role=Role.SOURCE).set_state(State.OK)
    settings = Settings(sensors=[], cameras=[], web=WebConfig(port=0))
    status = NodeStatus(
        settings,
        identity=NodeIdentity("n1", "d1", "p1", "0", "h"),
        registry=registry,
        recent=Recent(),
        host=lambda: ({}, None),
    )
    config = WebConfig(port=0, max_connections=4, header_timeout_s=1.0)
    server = StatusServer(
        config, status=status, health=registry.register("web"), snapshot_root=tmp_path
    )
    async with server:
        yield server


def _half_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    return sock


@pytest.mark.asyncio
async def test_the_guard_evicts_the_oldest_waiting_connection(
    small_server: StatusServer,
) -> None:
    port = small_server.port
    assert port is not None
    sockets = [await asyncio.to_thread(_half_open, port) for _ in range(4)]
    try:
        # Full of connections waiting for their header: the oldest makes room.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 200
        # The oldest one was closed by the server (a round trip: recv sees the end).
        assert await asyncio.to_thread(sockets[0].recv, 1) == b""
        assert small_server.guard.counters["evicted"] >= 1
        assert small_server.guard.active <= small_server.guard.limit
        # The others time out on their own, one header deadline later.
        for sock in sockets[1:]:
            assert await asyncio.to_thread(sock.recv, 1) == b""
        assert small_server.guard.counters["timed_out"] >= 3
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.asyncio
async def test_a_busy_port_is_a_config_error(small_server: StatusServer, tmp_path: Path) -> None:
    registry = HealthRegistry()
    settings = Settings(sensors=[], cameras=[])
    status = NodeStatus(
        settings,
        identity=NodeIdentity("n1", "d1", "p1", "0", "h"),
        registry=registry,
        recent=Recent(),
        host=lambda: ({}, None),
    )
    second = StatusServer(
        WebConfig(port=small_server.port or 0),
        status=status,
        health=registry.register("web"),
        snapshot_root=tmp_path,
    )
    with pytest.raises(
        ConfigError, match=r"web\.port: the status page cannot listen on 127\.0\.0\.1:\d+"
    ):
        await second.__aenter__()


def test_the_page_carries_the_configured_language_and_refresh() -> None:
    from edge_agent.web.assets import Assets

    english = Assets(language="en", refresh_s=2.5).get("index.html")
    assert english is not None
    html = english.body.decode()
    assert '<html lang="en" data-lang="en" data-refresh-ms="2500">' in html
    assert english.gzipped and english.etag.startswith('"')


@pytest.mark.asyncio
async def test_a_failing_handler_or_audit_sink_is_a_500_with_the_headers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = HealthRegistry()
    config = WebConfig(port=0, access_code_hash=AccessCode.create("right-code").encode())
    settings = Settings(
        sensors=[], cameras=[CameraConfig(name="gate", source=str(tmp_path / "x.avi"))], web=config
    )
    status = NodeStatus(
        settings,
        identity=NodeIdentity("n1", "d1", "p1", "0", "h"),
        registry=registry,
        recent=Recent(),
        host=lambda: ({}, None),
    )

    def broken_audit(event: str, code: str, source: str, detail: str) -> None:
        raise RuntimeError("audit store unavailable")

    async def broken_frame(camera: str) -> bytes:
        raise RuntimeError("a bug in the frame source")

    server = StatusServer(
        config,
        status=status,
        health=registry.register("web"),
        snapshot_root=tmp_path,
        live_frame=broken_frame,
        on_audit=broken_audit,
    )
    jar = aiohttp.CookieJar(unsafe=True)
    async with server, aiohttp.ClientSession(cookie_jar=jar) as session:
        base = f"http://127.0.0.1:{server.port}"
        async with session.post(f"{base}/login", json={"code": "wrong"}) as response:
            assert response.status == 401  # the auditor's failure does not change the answer
        async with session.post(f"{base}/login", json={"code": "right-code"}) as response:
            assert response.status == 200
        for _ in range(3):
            async with session.get(f"{base}/camera/gate/thumbnail.jpg") as response:
                assert response.status == 500
                assert (await response.json())["error"] == "internal_error"
                assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    # One line with its traceback per minute, not one per failed request.
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "audit sink failed" in errors[0].getMessage() and errors[0].exc_info
