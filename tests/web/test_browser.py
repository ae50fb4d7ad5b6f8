"""The page in a real browser: Debian's chromium driven by Playwright at 360×740, against the
agent running on its embedded default. Vietnamese first (with no English reason or duration
on it), then English through the switch, an axe-core scan of each, and the page keeping its
last data, with its age, once the node stops answering. Screenshots are kept as artefacts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from edge_agent.config import Settings, SimulatedSensor, WebConfig
from edge_agent.contract import Kind
from edge_agent.health import HealthRegistry, Role, State, reason
from edge_agent.web.facts import NodeIdentity, NodeStatus
from edge_agent.web.recent import Recent
from edge_agent.web.server import StatusServer
from tests.conftest import REPO, stop_process
from tests.web.conftest import ACCESS_CODE, SAVED, RunningAgent, launch_agent

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 360, "height": 740}
CATALOGUES = REPO / "edge_agent" / "web" / "static" / "i18n"
VI = json.loads((CATALOGUES / "vi.json").read_text())
EN = json.loads((CATALOGUES / "en.json").read_text())


def english_phrases() -> list[str]:
    """Words that must never appear on the Vietnamese page: the English catalogue's reason
    and state words, and the health model's own English reason texts."""
    phrases: set[str] = set()
    for entry in EN["reason"].values():
        for text in (entry["text"], entry["todo"]):
            phrases.update(p.strip() for p in re.split(r"\{[^}]*\}|[;:()—,.]", text))
    phrases.update(EN["verdict"].values())
    phrases.update(EN["state"].values())
    phrases.update(["broker unreachable", "connecting to", "online", "offline", "starting"])
    phrases.update(["listening", "no answer", "read failed", "is starting", "waiting to send"])
    return sorted(p for p in phrases if len(p) >= 5)


ENGLISH_DURATION = re.compile(
    r"\b\d+([.,]\d+)? ?(s|sec|secs|seconds?|min|mins|minutes?|h|hours?|days?)\b|\bago\b"
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    """The embedded default (no config file), with the sample clip and the model where the
    default looks for them, so that the demo camera runs too."""
    directory = tmp_path_factory.mktemp("embedded")
    for name in ("media", "models"):
        if (REPO / name).is_dir():
            (directory / name).symlink_to(REPO / name)
    agent = launch_agent(directory)
    yield agent
    stop_process(agent.process)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def errors() -> list[str]:
    """Script errors and console errors of the page; none are allowed unless a test says."""
    return []


@pytest.fixture
def page(browser: Browser, axe_js: str, errors: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    # Injected through DevTools before the page's own script: the page's CSP stays as it is.
    context.add_init_script(script=axe_js)
    tab = context.new_page()
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()
    assert not errors, errors


def wait_for_refreshes(page: Page, count: int) -> None:
    # Function expressions only: the page's CSP refuses eval, which Playwright uses for
    # plain expression strings.
    page.wait_for_function(
        "(n) => Number(document.body.dataset.refreshes || 0) >= n", arg=count, timeout=60_000
    )


def axe_serious(page: Page) -> list[dict[str, Any]]:
    page.click("details.components summary")
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]][:3]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def screenshot(page: Page, artefacts: Path, name: str) -> None:
    path = artefacts / name
    page.screenshot(path=str(path), full_page=True)
    SAVED.append(path)


def test_vietnamese_then_english(node: RunningAgent, page: Page, artefacts: Path) -> None:
    page.goto(node.base + "/")
    wait_for_refreshes(page, 2)  # the first answer, then a refresh without a reload
    assert page.evaluate("() => document.documentElement.lang") == "vi"
    verdict = page.inner_text("#verdict-title")
    if all((REPO / name).is_dir() for name in ("media", "models")):
        # The demo camera analyses frames with the real model: everything is healthy.
        assert verdict == VI["verdict"]["ok"], page.inner_text("#verdict")
        assert page.locator('[data-camera="demo"]').count() == 1
    else:
        assert verdict in (VI["verdict"]["ok"], VI["verdict"]["degraded"]), verdict
    temperature = page.inner_text('[data-sensor="sim-1"] td[data-quantity="temperature"]')
    assert re.fullmatch(r"−?\d+,\d{1,2}°C", temperature), temperature
    pending = page.inner_text('#sync [data-k="pending"]')
    assert re.fullmatch(r"\d{1,3}(\.\d{3})* bản ghi \(.+\)", pending), pending
    assert page.locator('[data-sensor="sim-1"] svg.spark circle').count() >= 1
    flash = page.wait_for_selector('#host [data-k="flash-writes"]', timeout=60_000)
    assert flash is not None and re.fullmatch(
        r"\S+ \S+ mỗi giờ, khoảng \S+ \S+ mỗi ngày", flash.inner_text()
    ), flash and flash.inner_text()
    label = page.get_attribute('[data-sensor="sim-1"] svg.spark', "aria-label") or ""
    assert "6 giờ" in label
    text = page.inner_text("body")
    english = [p for p in english_phrases() if p.lower() in text.lower()]
    assert not english, english
    assert not ENGLISH_DURATION.search(text), ENGLISH_DURATION.search(text)
    screenshot(page, artefacts, "status-vi.png")
    assert axe_serious(page) == []

    page.click("#lang")
    page.wait_for_function("() => document.documentElement.lang === 'en'")
    assert page.inner_text("#verdict-title") in (EN["verdict"]["ok"], EN["verdict"]["degraded"])
    temperature = page.inner_text('[data-sensor="sim-1"] td[data-quantity="temperature"]')
    assert re.fullmatch(r"-?−?\d+\.\d{1,2}°C", temperature), temperature
    assert re.fullmatch(
        r"\d{1,3}(,\d{3})* records \(.+\)", page.inner_text('#sync [data-k="pending"]')
    )
    assert "6 hours" in (page.get_attribute('[data-sensor="sim-1"] svg.spark', "aria-label") or "")
    refreshes = int(page.evaluate("() => document.body.dataset.refreshes"))
    wait_for_refreshes(page, refreshes + 1)
    assert page.evaluate("() => document.documentElement.lang") == "en"  # the choice stays
    screenshot(page, artefacts, "status-en.png")
    assert axe_serious(page) == []


def test_the_page_keeps_its_last_data_when_the_node_stops_answering(
    tmp_path: Path, page: Page, artefacts: Path, errors: list[str]
) -> None:
    agent = launch_agent(tmp_path / "agent")
    try:
        page.goto(agent.base + "/?lang=vi")
        wait_for_refreshes(page, 1)
        shown = page.inner_text('[data-sensor="sim-1"] td[data-quantity="temperature"]')
    finally:
        stop_process(agent.process)
    page.wait_for_selector("#verdict.stale", timeout=60_000)
    # Never a green banner for a node that stopped answering.
    assert page.get_attribute("#verdict", "class") == "verdict unknown stale"
    assert page.inner_text("#verdict-title") == VI["ui"]["no_answer"]
    assert page.inner_text("#verdict-reasons").startswith("Lần trả lời cuối: ")
    freshness = page.inner_text("#freshness")
    assert re.fullmatch(r"Dữ liệu dưới đây là của \d+ giây trước\.", freshness), freshness
    # The last values stay on the page.
    assert page.inner_text('[data-sensor="sim-1"] td[data-quantity="temperature"]') == shown
    screenshot(page, artefacts, "status-vi-offline.png")
    # The refreshes that found nobody: expected here, and nothing else.
    errors[:] = [e for e in errors if "ERR_CONNECTION_REFUSED" not in e]


class ServerThread:
    """A real StatusServer over a real registry, on a loop of its own in a thread, for the
    states an agent on its default does not reach (air quality, an unknown reason code)."""

    def __init__(self, server: StatusServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def serve() -> None:
            self._stop = asyncio.Event()
            async with self.server:
                self._ready.set()
                task = asyncio.create_task(self.server.run())
                await self._stop.wait()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        self.loop.run_until_complete(serve())
        self.loop.close()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the server's loop, where the readers read."""
        done = threading.Event()
        self.loop.call_soon_threadsafe(lambda: (fn(), done.set()))
        assert done.wait(10)


def test_air_quality_an_unknown_code_and_the_login_form(
    page: Page, tmp_path: Path, errors: list[str], access_code_hash: str, artefacts: Path
) -> None:
    registry = HealthRegistry()
    sensor = registry.register("sensor:aq-1", kind="sensor", role=Role.SOURCE, label="Trạm chợ")
    sensor.set_state(State.OK)
    pump = registry.register("pump", kind="pump")
    # A code no catalogue knows, with an English free-text param: said generically.
    pump.set_state(State.DEGRADED, reason("quantum_flux", "quantum flux", detail="flux high"))
    settings = Settings(
        sensors=[SimulatedSensor(kind="simulated", name="aq-1", label="Trạm chợ")],
        cameras=[],
        web=WebConfig(port=0, refresh_s=1, access_code_hash=access_code_hash),
    )
    recent = Recent()
    status = NodeStatus(
        settings,
        identity=NodeIdentity("n1", "d1", "p1", "0.0", "h"),
        registry=registry,
        recent=recent,
        host=lambda: ({"cpu_percent": 12.5, "clock_synchronised": True}, time.time()),
    )
    server = StatusServer(
        settings.web, status=status, health=registry.register("web"), snapshot_root=tmp_path
    )
    now = time.time()
    with ServerThread(server) as thread:
        thread.call(
            lambda: recent.observe(
                Kind.READING,
                {
                    "sensor": "aq-1",
                    "quantity": "pm2_5",
                    "value": 35.25,
                    "unit": "ug/m3",
                    "quality": "ok",
                },
                "aq-1",
                now,
            )
        )
        thread.call(
            lambda: recent.observe(
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
                now,
            )
        )
        page.goto(f"http://127.0.0.1:{server.port}/")
        wait_for_refreshes(page, 2)
        aqi = page.inner_text("#aqi")
        assert "123" in aqi and "Kém" in aqi
        colour = page.eval_on_selector("#aqi .swatch", "e => getComputedStyle(e).backgroundColor")
        assert colour == "rgb(255, 126, 0)"
        reasons = page.inner_text("#verdict-reasons")
        assert "Thành phần pump: Có vấn đề — báo kỹ thuật viên nếu kéo dài" in reasons
        assert "quantum" not in page.inner_text("body") and "flux" not in page.inner_text("body")
        assert page.inner_text('[data-sensor="aq-1"] td[data-quantity="pm2_5"]') == "35,3 µg/m³"

        page.fill("#code", "not-the-code")
        page.click("#login button[type=submit]")
        page.wait_for_function("() => document.getElementById('login-msg').textContent !== ''")
        assert page.inner_text("#login-msg") == VI["ui"]["wrong_code"]
        page.fill("#code", ACCESS_CODE)
        page.click("#login button[type=submit]")
        page.wait_for_selector("#unlocked:not([hidden])")
        logging.getLogger("edge_agent.test").warning("disk nearly full on /var")
        page.wait_for_function(
            "() => document.getElementById('log').textContent.includes('disk nearly full')"
        )
        assert page.is_visible("#events-section")
        screenshot(page, artefacts, "status-vi-unlocked.png")
        assert axe_serious(page) == []

        page.click("#lang")
        page.wait_for_function("() => document.documentElement.lang === 'en'")
        assert "Poor" in page.inner_text("#aqi")
        assert "Component pump: Degraded" in page.inner_text("#verdict-reasons")
    # The refused code is a 401 the browser reports in its console: expected here only.
    errors[:] = [e for e in errors if "status of 401" not in e]
