"""`ioc serve`: the read-only fleet view for the provincial operations room.

Server-rendered HTML, no script and no external asset: the page works on a wall screen
with no internet, and the Content-Security-Policy allows nothing but our own stylesheet.
Every request reads the receiver's database through a read-only connection on a thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from edge_agent.errors import ConfigError, StorageError
from edge_agent.ioc.fleet import NodeDetail, NodeRow, Reader
from edge_agent.ioc.fleet_text import age
from edge_agent.ioc.web_text import CSS, ICON, TEXT

log = logging.getLogger(__name__)

T = TypeVar("T")

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class ViewOptions:
    db: Path | None = None
    dsn: str | None = None
    host: str = "127.0.0.1"
    port: int = 8090
    language: str = "vi"
    user: str | None = None
    password: str | None = None
    timezone: str = "Asia/Ho_Chi_Minh"

    def __post_init__(self) -> None:
        if self.language not in TEXT:
            raise ValueError(f"language {self.language!r}: one of {', '.join(TEXT)}")
        if (self.user is None) != (self.password is None):
            raise ValueError("a login needs both a user and a password")


class View:
    def __init__(self, options: ViewOptions) -> None:
        self.options = options
        try:
            self.zone = ZoneInfo(options.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError([f"--timezone: unknown zone {options.timezone!r}"]) from None

    async def read(self, work: Callable[[Reader], T]) -> T:
        def run() -> T:
            reader = Reader.open(path=self.options.db, dsn=self.options.dsn)
            try:
                return work(reader)
            finally:
                reader.close()

        return await asyncio.to_thread(run)

    # -- helpers ---------------------------------------------------------------------

    def lang(self, request: web.Request) -> str:
        wanted = request.query.get("lang", "")
        return wanted if wanted in TEXT else self.options.language

    def when(self, ts: float | None, t: dict[str, str], now: float) -> str:
        if ts is None:
            return f'<span class="mute">{escape(t["never"])}</span>'
        local = datetime.fromtimestamp(ts, self.zone).strftime("%Y-%m-%d %H:%M:%S")
        ago = escape(t["ago"].format(age=age(ts, now)))
        return f'{escape(local)} <span class="mute">({ago})</span>'

    def page(self, lang: str, title: str, body: str, *, switch_to: str) -> web.Response:
        t = TEXT[lang]
        other = "en" if lang == "vi" else "vi"
        html = (
            f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta http-equiv="refresh" content="30">'
            f"<title>{escape(title)}</title>"
            '<link rel="icon" href="/static/icon.svg" type="image/svg+xml">'
            '<link rel="stylesheet" href="/static/ioc.css"></head><body>'
            f'<header><h1>{escape(title)}</h1><a href="{escape(switch_to)}lang={other}"'
            f' hreflang="{other}">{escape(t["switch"])}</a></header>'
            f"<main>{body}</main>"
            f"<footer>{escape(t['refresh'].format(zone=self.options.timezone))}</footer>"
            "</body></html>"
        )
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    def state(self, state: str, t: dict[str, str]) -> str:
        css = state if state in ("online", "offline") else "unknown"
        return f'<span class="state state-{css}">{escape(t.get(state, state))}</span>'

    # -- pages -----------------------------------------------------------------------

    async def fleet(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        t = TEXT[lang]
        nodes = await self.read(lambda r: r.fleet())
        now = time.time()
        states = {"online": 0, "offline": 0, "unknown": 0}
        groups: dict[str, list[NodeRow]] = {}
        for n in nodes:
            states[n.state if n.state in states else "unknown"] += 1
            groups.setdefault(n.group_name, []).append(n)
        body = [f'<p class="summary">{escape(t["summary"].format(**states))}</p>']
        if not nodes:
            body.append(f"<section><p>{escape(t['no_nodes'])}</p></section>")
        head = "".join(
            f"<th>{escape(t[k])}</th>"
            for k in (
                "node",
                "state",
                "since",
                "version",
                "last_event",
                "pending",
                "health",
                "holes",
                "aqi",
            )
        )
        for name, members in groups.items():
            code = members[0].group_code
            label = name if name == code else f"{name} ({code})"
            rows = "".join(self._fleet_row(n, t, lang, now) for n in members)
            body.append(
                f'<section class="area"><h2>{escape(t["area"])}: {escape(label)}</h2>'
                f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>"
            )
        return self.page(lang, t["title"], "".join(body), switch_to="/?")

    def _fleet_row(self, n: NodeRow, t: dict[str, str], lang: str, now: float) -> str:
        link = f"/node/{quote(n.node, safe='')}?lang={lang}"
        verdict = n.verdict or ""
        aqi = "-" if n.aqi is None else f"{n.aqi:.0f}"
        holes = f'<span class="holes-open">{n.open_holes}</span>' if n.open_holes else "0"
        return (
            f'<tr class="node node-{escape(n.state)}" data-node="{escape(n.node)}">'
            f'<td><a href="{escape(link)}">{escape(n.node)}</a></td>'
            f"<td>{self.state(n.state, t)}</td><td>{self.when(n.since, t, now)}</td>"
            f"<td>{escape(n.version or '-')}</td>"
            f"<td>{self.when(n.last_event_ts, t, now)}</td>"
            f"<td>{'-' if n.pending_rows is None else n.pending_rows}</td>"
            f'<td class="verdict-{escape(verdict)}">{escape(t.get(verdict, verdict or "-"))}</td>'
            f"<td>{holes}</td><td>{escape(aqi)}</td></tr>"
        )

    async def node(self, request: web.Request) -> web.Response:
        lang = self.lang(request)
        t = TEXT[lang]
        name = request.match_info["node"]
        detail = await self.read(lambda r: r.node(name))
        if detail is None:
            response = self.page(
                lang,
                t["not_found"],
                f'<p><a href="/?lang={lang}">{escape(t["back"])}</a></p>',
                switch_to=f"/node/{quote(name, safe='')}?",
            )
            response.set_status(404)
            return response
        body = self._node_body(detail, t, lang, time.time())
        return self.page(
            lang, f"{t['node']} {name}", body, switch_to=f"/node/{quote(name, safe='')}?"
        )

    def _table(self, t: dict[str, str], keys: tuple[str, ...], rows: list[str]) -> str:
        if not rows:
            return f'<p class="mute">{escape(t["none"])}</p>'
        head = "".join(f"<th>{escape(t[k])}</th>" for k in keys)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    def _node_body(self, d: NodeDetail, t: dict[str, str], lang: str, now: float) -> str:
        n = d.row
        facts = (
            f'<p><a href="/?lang={lang}">{escape(t["back"])}</a></p>'
            f"<section><p>{self.state(n.state, t)} {escape(t['since'])}"
            f" {self.when(n.since, t, now)} · {escape(t['area'])}: {escape(n.group_name)}"
            f" · {escape(t['version'])}: {escape(n.version or '-')}"
            f" · {escape(t['pending'])}: {'-' if n.pending_rows is None else n.pending_rows}"
            f" · {escape(t['health'])}: {escape(t.get(n.verdict or '', n.verdict or '-'))}"
            f" · {escape(t['holes'])}: {n.open_holes}</p></section>"
        )
        readings = [
            f"<tr><td>{escape(r['sensor'])}</td><td>{escape(r['quantity'])}</td>"
            f"<td>{_number(r['value'])} {escape(r['unit'])}</td><td>{escape(r['quality'])}</td>"
            f"<td>{self.when(r['ts'], t, now)}</td></tr>"
            for r in d.readings
        ]
        cameras = [
            f"<tr><td>{escape(c['camera'])}</td>"
            f"<td>{self.state(c['state'], t) if c['state'] else '-'}</td>"
            f'<td>{self.when(c["since"], t, now)}</td><td class="detail">'
            f"{escape(', '.join(f'{k}: {v}' for k, v in c['counted'].items()) or '-')}</td></tr>"
            for c in d.cameras
        ]
        events = [
            f"<tr><td>{self.when(e['ts'], t, now)}</td><td>{escape(e['kind'])}</td>"
            f'<td>{escape(str(e["source"]))}</td><td class="detail">{escape(_summary(e))}</td>'
            "</tr>"
            for e in d.events
        ]
        sequences = [
            f"<tr><td>{escape(s['epoch'])}</td><td>{s['max_seq']}</td>"
            f"<td>{s['contiguous_seq']}</td><td>{self.when(s['last_received_at'], t, now)}</td>"
            "</tr>"
            for s in d.sequences
        ]
        holes = [
            f'<tr><td>{escape(h["epoch"])}</td><td class="holes-open">{h["first_seq"]}'
            f"–{h['last_seq']}</td><td>{self.when(h['opened_at'], t, now)}</td></tr>"
            for h in d.holes
        ]
        statuses = [
            f"<tr><td>{self.when(s['received_at'], t, now)}</td>"
            f"<td>{self.state(s['state'], t)}</td><td>{escape(s['reason'] or '-')}</td>"
            f"<td>{escape(s['version'] or '-')}</td></tr>"
            for s in d.statuses
        ]
        sections = (
            ("sensors", ("sensor", "quantity", "value", "quality", "time"), readings),
            ("cameras", ("camera", "state", "since", "counted"), cameras),
            ("open_holes", ("epoch", "range", "opened"), holes),
            ("events", ("time", "kind", "source", "detail"), events),
            ("sequences", ("epoch", "max_seq", "contiguous", "last_event"), sequences),
            ("statuses", ("time", "state", "reason", "version"), statuses),
        )
        return facts + "".join(
            f'<section class="{key}"><h2>{escape(t[key])}</h2>{self._table(t, cols, rows)}'
            "</section>"
            for key, cols, rows in sections
        )

    async def api_nodes(self, request: web.Request) -> web.Response:
        nodes = await self.read(lambda r: r.fleet())
        return web.json_response(
            [n.to_json() for n in nodes], dumps=lambda o: json.dumps(o, ensure_ascii=False)
        )

    async def icon(self, request: web.Request) -> web.Response:
        response = web.Response(text=ICON, content_type="image/svg+xml")
        response.headers["Cache-Control"] = "max-age=86400"
        return response

    async def css(self, request: web.Request) -> web.Response:
        response = web.Response(text=CSS, content_type="text/css", charset="utf-8")
        response.headers["Cache-Control"] = "max-age=300"
        return response


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _summary(event: dict[str, Any]) -> str:
    if event["kind"] == "reading":
        return f"{event['quantity']} = {_number(event['value'])} {event['unit']}"
    text = json.dumps(event.get("data"), ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 160 else text[:157] + "..."


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(options: ViewOptions) -> web.Application:
    view = View(options)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            options.user is not None
            and request.path != "/healthz"
            and not _authorised(request.headers.get("Authorization", ""), options)
        ):
            raise web.HTTPUnauthorized(
                headers={**HEADERS, "WWW-Authenticate": 'Basic realm="IOC", charset="UTF-8"'}
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update({k: v for k, v in HEADERS.items() if k not in exc.headers})
            raise
        except StorageError as exc:
            log.warning("cannot read the receiver database: %s", exc)
            response = web.Response(
                status=503, text=f"the receiver database cannot be read: {exc}\n"
            )
        for key, value in HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", view.fleet)
    app.router.add_get("/node/{node}", view.node)
    app.router.add_get("/api/nodes", view.api_nodes)
    app.router.add_get("/static/ioc.css", view.css)
    app.router.add_get("/static/icon.svg", view.icon)
    app.router.add_get("/favicon.ico", view.icon)
    app.router.add_get("/healthz", lambda request: _ok())
    return app


async def _ok() -> web.Response:
    return web.Response(text="ok\n")


def _authorised(header: str, options: ViewOptions) -> bool:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    assert options.user is not None and options.password is not None
    good_user = hmac.compare_digest(user.encode(), options.user.encode())
    good_password = hmac.compare_digest(password.encode(), options.password.encode())
    return good_user and good_password


async def serve(options: ViewOptions) -> None:
    """Serve until SIGTERM or SIGINT; a database that cannot be read fails the start."""
    await View(options).read(lambda reader: reader.fleet())
    runner = web.AppRunner(build_app(options), handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, options.host, options.port)
        await site.start()
        for address in runner.addresses:
            log.info("fleet view on http://%s:%d/", address[0], address[1])
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
