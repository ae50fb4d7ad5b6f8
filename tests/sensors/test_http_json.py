"""http_json against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from edge_agent.config import load_settings
from edge_agent.config.sensors import HttpJsonSensor, JsonValue
from edge_agent.errors import SensorError
from edge_agent.health import ComponentHealth, State
from edge_agent.sensors.base import Poller
from edge_agent.sensors.http_json import resolve_pointer
from edge_agent.sensors.registry import build_driver

from .conftest import Recorder, running, wait_state


async def eventually_true(predicate: Any, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (the health entry has no event to await)
            await asyncio.sleep(0.02)


TOKEN = "s3cret-token"


class Station:
    """A weather station's HTTP API whose behaviour the test switches."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.release = asyncio.Event()
        self.dripping = asyncio.Event()
        self.auth: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.auth.append(request.headers.get("Authorization"))
        if self.mode == "500":
            return web.Response(status=500, text="boom")
        if self.mode == "html":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if self.mode == "hang":
            await self.release.wait()
        if self.mode == "drip":
            # Headers at once, then one byte of body every 0.1 s: each byte arrives well
            # within a socket timeout, so only a deadline on the whole read stops it.
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            self.dripping.set()
            for _ in range(600):
                if self.release.is_set():
                    break
                await response.write(b" ")
                await asyncio.sleep(0.1)
            return response
        return web.json_response(
            {
                "station": "hue-03",
                "obs": [{"t": 31.5, "rh": "77", "p": 1008.2, "a/b": 4, "pm": "n/a"}],
                "rain_mm": None,
            }
        )


@pytest_asyncio.fixture
async def station() -> AsyncIterator[tuple[Station, str]]:
    st = Station()
    app = web.Application()
    app.router.add_get("/api/now", st.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield st, f"http://127.0.0.1:{port}/api/now"
    st.release.set()
    await runner.cleanup()


VALUES = [
    JsonValue(pointer="/obs/0/t", quantity="temperature", unit="Cel"),
    JsonValue(pointer="/obs/0/rh", quantity="humidity", unit="%"),
    JsonValue(pointer="/obs/0/p", quantity="pressure", unit="hPa"),
    JsonValue(pointer="/obs/0/a~1b", quantity="wind_speed", unit="m/s", scale=0.5),
    JsonValue(pointer="/rain_mm", quantity="rainfall", unit="mm"),
    JsonValue(pointer="/obs/0/pm", quantity="pm2_5", unit="ug/m3"),
]


def config(url: str, **extra: Any) -> HttpJsonSensor:
    return HttpJsonSensor(kind="http_json", name="wx", url=url, values=VALUES, **extra)


def test_json_pointer() -> None:
    doc = {"a": [{"b~c": 1}], "": 2}
    assert resolve_pointer(doc, "/a/0/b~0c") == 1
    assert resolve_pointer(doc, "/") == 2
    assert resolve_pointer(doc, "") is doc
    with pytest.raises(LookupError):
        resolve_pointer(doc, "/a/1")


@pytest.mark.asyncio
async def test_values_units_and_bearer_token(station: tuple[Station, str], tmp_path: Path) -> None:
    st, url = station
    driver = build_driver(config(url, token=TOKEN), state_dir=tmp_path)
    samples = await asyncio.to_thread(driver.read)
    got = {s.quantity: (s.value, s.unit) for s in samples}
    assert got["temperature"] == (31.5, "Cel")
    assert got["humidity"] == (77.0, "%")
    assert got["pressure"] == (1008.2, "hPa")
    assert got["wind_speed"] == (2.0, "m/s")
    assert math.isnan(got["rainfall"][0])  # null: sent as a bad reading, not dropped
    assert st.auth == [f"Bearer {TOKEN}"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("mode", "message"), [("500", "HTTP 500"), ("html", "not JSON")])
async def test_server_errors(
    station: tuple[Station, str], tmp_path: Path, mode: str, message: str
) -> None:
    st, url = station
    st.mode = mode
    driver = build_driver(config(url), state_dir=tmp_path)
    with pytest.raises(SensorError, match=message):
        await asyncio.to_thread(driver.read)
    assert st.auth == [None]


@pytest.mark.asyncio
async def test_timeout_then_recovery(
    station: tuple[Station, str], tmp_path: Path, recorder: Recorder
) -> None:
    st, url = station
    st.mode = "hang"
    cfg = config(url, interval_s=0.05, timeout_s=0.3, backoff_max_s=0.1, failing_after=2)
    health = ComponentHealth("sensor:wx")
    async with running(
        Poller(cfg, build_driver(cfg, state_dir=tmp_path), sink=recorder, health=health)
    ):
        await wait_state(health, State.FAILING)
        assert "timed out" in health.last_error or "no answer" in health.last_error
        st.mode = "ok"
        st.release.set()
        await wait_state(health, State.DEGRADED)  # rainfall is null: one bad value of five
    temps = recorder.readings("temperature")
    assert temps[-1]["value"] == 31.5 and temps[-1]["quality"] == "ok"
    rain = recorder.readings("rainfall")[-1]
    assert rain["quality"] == "bad" and rain["value"] is None and rain["raw"] == "null"
    # A text where a number belongs is kept as the text, not as "nan".
    pm = recorder.readings("pm2_5")[-1]
    assert pm["quality"] == "bad" and pm["value"] is None and pm["raw"] == "n/a"


@pytest.mark.asyncio
async def test_a_body_dripping_slowly_fails_within_the_timeout(
    station: tuple[Station, str], tmp_path: Path, recorder: Recorder
) -> None:
    st, url = station
    st.mode = "drip"
    cfg = config(url, interval_s=0.05, timeout_s=1.0, backoff_max_s=0.1, failing_after=1)
    health = ComponentHealth("sensor:wx")
    async with running(
        Poller(cfg, build_driver(cfg, state_dir=tmp_path), sink=recorder, health=health)
    ):
        await st.dripping.wait()
        await wait_state(health, State.FAILING)
        # The driver gave up on its own deadline (0.8 x timeout), not only the poller's.
        await eventually_true(lambda: "read deadline" in health.last_error)
        st.release.set()


def test_token_from_credentials_directory(tmp_path: Path) -> None:
    toml = tmp_path / "edge-agent.toml"
    toml.write_text(
        '[[sensors]]\nkind = "http_json"\nname = "aq.api"\nurl = "http://192.0.2.1/x"\n'
        'values = [{pointer = "/pm25", quantity = "pm2_5", unit = "ug/m3"}]\n'
        '[[sensors]]\nkind = "simulated"\nname = "sim"\n'
    )
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "sensors.aq.api.token").write_text(TOKEN + "\n")
    (creds / "sensors.sim.token").write_text("ignored: simulated has no token\n")
    settings = load_settings(toml, env={"CREDENTIALS_DIRECTORY": str(creds)})
    sensor = settings.sensors[0]
    assert isinstance(sensor, HttpJsonSensor)
    assert sensor.token is not None and sensor.token.get_secret_value() == TOKEN
    assert TOKEN not in str(settings.model_dump(mode="json"))
