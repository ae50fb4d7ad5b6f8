"""The operations-room view in a real browser (Debian's chromium through Playwright)."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge_agent.ioc.sqlite_store import SqliteStore
from edge_agent.ioc.store import Store
from edge_agent.ioc.web import CSP
from tests.conftest import (
    IN_CI,
    Broker,
    agent_command,
    agent_env,
    free_port,
    stop_process,
    wait_for_port,
)
from tests.ioc.conftest import LightNode, eventually, publisher, reader_for, running_receiver

pytestmark = pytest.mark.asyncio

CHROMIUM = Path("/usr/bin/chromium")


def chromium() -> str:
    if not CHROMIUM.exists():
        message = "chromium not found: install the Debian package chromium (scripts/setup)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return str(CHROMIUM)


async def feed_two_nodes(broker: Broker, path: Path) -> None:
    """Node A online in an area with readings; node B online, then gone (its will)."""

    def opener() -> Store:
        return SqliteStore(path, synchronous="NORMAL")

    a = LightNode("node-a")
    b = LightNode("node-b", district="huyen-cu")
    async with running_receiver(broker, opener), publisher(broker) as link:
        area = {"code": "00004", "name": "Phường Ba Đình"}
        await link.publish(a.topics.status, a.status(area=area, pending_rows=3), retain=True)
        await link.publish(b.topics.status, b.status(), retain=True)
        await link.publish(f"{a.topics.base}/data/batch", a.batch([1, 2, 3]))
        await link.publish(b.topics.status, b.status("offline", reason="will"), retain=True)
        reader = reader_for(opener)
        try:
            await eventually(
                lambda: (
                    {n.node: n.state for n in reader.fleet()}
                    == {"node-a": "online", "node-b": "offline"}
                    and reader.count("node-a") == 3
                )
            )
        finally:
            reader.close()


def start_view(db: Path, port: int, password: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        agent_command(
            "ioc",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--user",
            "ops",
            "--password-file",
            str(password),
        ),
        env=agent_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def get(url: str, *, login: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": "Basic " + base64.b64encode(login).decode()} if login else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


async def test_the_fleet_view_shows_two_nodes_one_offline(broker: Broker, tmp_path: Path) -> None:
    executable = chromium()
    db = tmp_path / "ioc.sqlite3"
    await feed_two_nodes(broker, db)
    password = tmp_path / "view.password"
    password.write_text("s3cret\n")
    port = free_port()
    server = start_view(db, port, password)
    try:
        wait_for_port(port, timeout_s=60, process=server)
        url = f"http://127.0.0.1:{port}"
        assert (await asyncio.to_thread(get, url + "/"))[0] == 401

        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=executable, args=["--no-sandbox"] if os.geteuid() == 0 else []
            )
            context = await browser.new_context(
                http_credentials={"username": "ops", "password": "s3cret"}
            )
            page = await context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            response = await page.goto(url + "/")
            assert response is not None and response.status == 200
            assert response.headers["content-security-policy"] == CSP
            online = page.locator('tr.node-online[data-node="node-a"]')
            offline = page.locator('tr.node-offline[data-node="node-b"]')
            await online.wait_for()
            await offline.wait_for()
            assert "trực tuyến" in await online.inner_text()
            assert "ngoại tuyến" in await offline.inner_text()
            headings = await page.locator("section.area h2").all_inner_texts()
            assert any("Phường Ba Đình (00004)" in h for h in headings), headings
            assert any("huyen-cu" in h for h in headings), headings
            # The stylesheet came from us and applied: the offline badge is red, not plain.
            colour = await offline.locator(".state").evaluate("e => getComputedStyle(e).color")
            assert colour == "rgb(179, 38, 30)"
            await page.screenshot(path=str(tmp_path / "fleet.png"), full_page=True)

            await online.locator("a").click()
            await page.locator("section.sensors").wait_for()
            sensors = await page.locator("section.sensors").inner_text()
            assert "pm2_5" in sensors and "ug/m3" in sensors
            assert "node-a" in await page.title()

            await page.get_by_role("link", name="English").click()
            await page.locator("section.sensors h2").wait_for()
            assert await page.locator("section.sensors h2").inner_text() == (
                "Sensors (newest values)"
            )
            await page.goto(url + "/?lang=en")
            assert "offline" in await page.locator('tr[data-node="node-b"]').inner_text()
            assert errors == []  # nothing the CSP blocked, no asset missing, no script error
            missing = await page.goto(url + "/node/nobody")
            assert missing is not None and missing.status == 404
            await browser.close()
        status, body = await asyncio.to_thread(get, url + "/api/nodes", login=b"ops:s3cret")
        assert status == 200 and b'"node-b"' in body
    finally:
        stop_process(server)
