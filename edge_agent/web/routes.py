"""The routes: the page and its files, `/api/status`, `/healthz`, `/metrics`, login, and what
only a logged-in browser may open (camera thumbnails, the event list, the configuration).

Every response gets the security headers; nothing is ever written; a handler never blocks
the event loop (files and the access-code hash run on threads).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from edge_agent.config import WebConfig, effective_config
from edge_agent.errors import CameraError
from edge_agent.web.access import AccessCode, LoginLimiter, Sessions
from edge_agent.web.assets import LANGUAGES, Asset, Assets
from edge_agent.web.facts import NodeStatus, public_params
from edge_agent.web.guard import ConnectionGuard
from edge_agent.web.problems import LogTail

log = logging.getLogger(__name__)

COOKIE = "edge_agent_session"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
STATIC_NAMES = frozenset({"app.js", "style.css", "icon.svg"})
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}\.jpg$")
MAX_BODY_BYTES = 4096
METRICS_CACHE_S = 1.0
# At most this many hashes at once: scrypt takes tens of milliseconds and 16 MiB each.
VERIFY_CONCURRENCY = 1

AuditSink = Callable[[str, str, str, str], None]
"""`on_audit(event, code, source, detail)`: a failed or refused login, for the auditor."""
LiveFrame = Callable[[str], Awaitable[bytes]]


class ErrorLog:
    """An unexpected error in a handler: logged with its traceback at most once a minute,
    the others counted, so that a client cannot flood the log through a bug."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self._last: float | None = None
        self._suppressed = 0

    def note(self, what: str, *, exc_info: bool) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval_s:
            self._suppressed += 1
            return
        log.error(
            "status page: %s (%d more since the last report)",
            what,
            self._suppressed,
            exc_info=exc_info,
        )
        self._last, self._suppressed = now, 0


@dataclass
class WebState:
    config: WebConfig
    status: NodeStatus
    assets: Assets
    metrics: CollectorRegistry
    guard: ConnectionGuard
    sessions: Sessions
    limiter: LoginLimiter
    log_tail: LogTail
    on_audit: AuditSink
    snapshot_root: Path
    live_frame: LiveFrame | None = None
    access: AccessCode | None = None
    verifying: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(VERIFY_CONCURRENCY)
    )
    logins: dict[str, int] = field(default_factory=dict)
    metrics_cache: dict[str, tuple[float, bytes]] = field(default_factory=dict)
    error_log: ErrorLog = field(default_factory=ErrorLog)

    def logged_in(self, request: web.Request) -> bool:
        return self.sessions.valid(request.cookies.get(COOKIE))

    def count_login(self, outcome: str) -> None:
        self.logins[outcome] = self.logins.get(outcome, 0) + 1

    def audit(self, event: str, code: str, source: str, detail: str) -> None:
        """Hand a refused login to the auditor; its own failure never fails the answer."""
        try:
            self.on_audit(event, code, source, detail)
        except Exception:
            self.error_log.note(f"audit sink failed on {event} {code}", exc_info=True)

    def failed_request(self, request: web.Request) -> None:
        self.error_log.note(f"{request.method} {request.path} failed", exc_info=True)


STATE: web.AppKey[WebState] = web.AppKey("edge_agent_web", WebState)


def _json(data: Any, *, status: int = 200, cache: str = "no-store") -> web.Response:
    response = web.json_response(
        data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False, allow_nan=False)
    )
    response.headers["Cache-Control"] = cache
    return response


def _error(status: int, code: str, **extra: Any) -> web.Response:
    return _json({"error": code, **extra}, status=status)


@web.middleware
async def protect(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Marks the connection busy (the header deadline stops) and adds the headers."""
    state = request.app[STATE]
    state.guard.request_started(request.transport)
    try:
        if request.method not in ("GET", "HEAD", "POST"):
            # No CORS preflight or anything else: the page is same-origin only.
            response: web.StreamResponse = _error(405, "method_not_allowed")
        else:
            response = await handler(request)
    except web.HTTPException as exc:
        response = _error(exc.status, exc.reason.lower().replace(" ", "_"))
    except Exception:
        state.failed_request(request)
        response = _error(500, "internal_error")
    finally:
        state.guard.request_finished(request.transport)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _send(request: web.Request, asset: Asset | None) -> web.StreamResponse:
    if asset is None:
        return _error(404, "not_found")
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = asset.gzipped
    else:
        body = asset.body
    return web.Response(body=body, headers={**headers, "Content-Type": asset.content_type})


async def index(request: web.Request) -> web.StreamResponse:
    return _send(request, request.app[STATE].assets.get("index.html"))


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_NAMES:
        return _error(404, "not_found")
    return _send(request, request.app[STATE].assets.get(name))


async def catalogue(request: web.Request) -> web.StreamResponse:
    language = request.match_info["lang"]
    if language not in LANGUAGES:
        return _error(404, "not_found")
    return _send(request, request.app[STATE].assets.get(f"i18n/{language}.json"))


async def api_status(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    logged_in = state.logged_in(request)
    response = _json(state.status.build(details=logged_in, logged_in=logged_in))
    response.headers["Vary"] = "Cookie, Accept-Encoding"
    response.enable_compression()
    return response


async def healthz(request: web.Request) -> web.StreamResponse:
    verdict = request.app[STATE].status.registry.verdict()
    body = {
        "verdict": verdict.state.value,
        "reasons": [
            {
                "component": f.component,
                "severity": f.severity.value,
                "code": f.reason.code,
                "params": public_params(f.reason.params, details=False),
            }
            for f in verdict.findings
        ],
    }
    return _json(body, status=503 if verdict.state.value == "failing" else 200)


async def metrics(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    # At most one exposition a second per format, however many scrapers ask.
    now = time.monotonic()
    cached = state.metrics_cache.get(content_type)
    if cached is None or now - cached[0] >= METRICS_CACHE_S:
        cached = state.metrics_cache[content_type] = (now, encoder(state.metrics))
    response = web.Response(body=cached[1], headers={"Content-Type": content_type})
    response.enable_compression()
    return response


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is not None and origin not in (
        f"http://{request.host}",
        f"https://{request.host}",
    ):
        return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


async def _login_code(request: web.Request, timeout_s: float) -> str | None:
    async with asyncio.timeout(timeout_s):
        if request.content_type == "application/json":
            data = await request.json()
            code = data.get("code") if isinstance(data, dict) else None
        else:
            form = await request.post()
            code = form.get("code")
    return code if isinstance(code, str) else None


async def login(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    client = request.remote or "unknown"
    if not _same_origin(request):
        state.count_login("cross_origin")
        state.audit("login_failed", "cross_origin", client, "login from another site refused")
        return _error(403, "cross_origin")
    if state.access is None:
        state.count_login("not_configured")
        state.audit("login_failed", "not_configured", client, "no access code is configured")
        return _error(403, "not_configured")
    wait = state.limiter.retry_after(client)
    if wait > 0:
        state.count_login("rate_limited")
        state.audit(
            "login_failed",
            "rate_limited",
            client,
            f"too many wrong codes; refused for {math.ceil(wait)} s",
        )
        response = _error(429, "rate_limited", retry_after_s=math.ceil(wait))
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    try:
        code = await _login_code(request, state.config.body_timeout_s)
    except (TimeoutError, ValueError, web.HTTPException):
        code = None
    if code is None:
        state.count_login("bad_request")
        state.audit("login_failed", "bad_request", client, "login without a code")
        return _error(400, "bad_request")
    access = state.access
    async with state.verifying:
        ok = await asyncio.to_thread(access.verify, code)
    if not ok:
        failures = state.limiter.failed(client)
        state.count_login("wrong_code")
        state.audit(
            "login_failed",
            "wrong_code",
            client,
            f"wrong access code ({failures} of {state.limiter.attempts}"
            f" allowed in {state.limiter.window_s:g} s)",
        )
        return _error(401, "wrong_code")
    state.limiter.succeeded(client)
    state.count_login("ok")
    response = _json({"ok": True})
    response.set_cookie(
        COOKIE,
        state.sessions.open(),
        max_age=round(state.config.session_ttl_s),
        path="/",
        httponly=True,
        samesite="Strict",
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if not _same_origin(request):
        return _error(403, "cross_origin")
    state.sessions.close(request.cookies.get(COOKIE))
    response = _json({"ok": True})
    response.del_cookie(COOKIE, path="/")
    return response


def _locked(request: web.Request) -> web.StreamResponse | None:
    if request.app[STATE].logged_in(request):
        return None
    return _error(401, "login_required")


async def events(request: web.Request) -> web.StreamResponse:
    if (refused := _locked(request)) is not None:
        return refused
    state = request.app[STATE]
    recent = list(reversed(state.status.recent.events))
    return _json({"events": recent, "log": state.log_tail.entries()})


async def config(request: web.Request) -> web.StreamResponse:
    if (refused := _locked(request)) is not None:
        return refused
    return _json(effective_config(request.app[STATE].status.settings))


async def thumbnail(request: web.Request) -> web.StreamResponse:
    if (refused := _locked(request)) is not None:
        return refused
    state = request.app[STATE]
    camera = request.match_info["camera"]
    known = {c.name for c in state.status.settings.cameras if c.enabled}
    if camera not in known:
        return _error(404, "unknown_camera")
    image = await _detection_snapshot(state, camera)
    if image is None and state.live_frame is not None:
        try:
            image = await state.live_frame(camera)
        except CameraError:
            image = None
    if image is None:
        return _error(404, "no_frame_yet")
    return web.Response(
        body=image, headers={"Content-Type": "image/jpeg", "Cache-Control": "no-store, private"}
    )


async def _detection_snapshot(state: WebState, camera: str) -> bytes | None:
    activity = state.status.recent.cameras.get(camera)
    name = activity.snapshot if activity is not None else None
    if name is None or not SNAPSHOT_NAME.match(name):
        return None
    folder = state.snapshot_root / camera
    path = folder / name

    def read() -> bytes | None:
        try:
            if path.resolve().parent != folder.resolve():
                return None
            return path.read_bytes()
        except OSError:
            return None

    return await asyncio.to_thread(read)


def build_app(state: WebState) -> web.Application:
    app = web.Application(middlewares=[protect], client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/i18n/{lang}.json", catalogue)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/config", config)
    app.router.add_get("/camera/{camera}/thumbnail.jpg", thumbnail)
    return app
