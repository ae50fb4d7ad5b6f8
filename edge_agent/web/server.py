"""The status server component: the page for field staff, `/api/status`, `/healthz` and
`/metrics` on `[web] host:port`. Read-only: it reads what app.py hands over and never writes.

aiohttp serves the requests (`AppRunner(handle_signals=False)`), behind our own listening
server so that every connection passes the `ConnectionGuard` (cap and header deadline).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from pathlib import Path
from types import TracebackType

from aiohttp import web

from edge_agent.config import WebConfig
from edge_agent.errors import ConfigError
from edge_agent.health import ComponentHealth, State, reason
from edge_agent.web.access import AccessCode, LoginLimiter, Sessions
from edge_agent.web.assets import Assets
from edge_agent.web.facts import NodeStatus
from edge_agent.web.guard import AcceptErrorFilter, ConnectionGuard, RateLimitedLog, connection_cap
from edge_agent.web.metrics import metrics_registry
from edge_agent.web.problems import LogTail
from edge_agent.web.routes import AuditSink, LiveFrame, WebState, build_app

log = logging.getLogger(__name__)

TICK_S = 1.0
BACKLOG = 64


class AuditLog:
    """Until an auditor is wired in: say each refused login in the log, at most one line
    per event, code and client a minute (with how many there were)."""

    def __init__(self) -> None:
        self._logs: dict[tuple[str, str, str], RateLimitedLog] = {}

    def __call__(self, event: str, code: str, source: str, detail: str) -> None:
        key = (event, code, source)
        limited = self._logs.get(key)
        if limited is None:
            if len(self._logs) > 1024:
                self._logs.clear()
            limited = self._logs[key] = RateLimitedLog(
                log, f"audit: {event} {code} from {source}: %s"
            )
        limited.note(detail)


class StatusServer:
    """Serves the page; `port` is the one it listens on once entered."""

    name = "web"

    def __init__(
        self,
        config: WebConfig,
        *,
        status: NodeStatus,
        health: ComponentHealth,
        snapshot_root: Path,
        live_frame: LiveFrame | None = None,
        on_audit: AuditSink | None = None,
    ) -> None:
        self.config = config
        self.status = status
        self.health = health
        limit = connection_cap(config.max_connections, config.fd_reserve, BACKLOG)
        self.guard = ConnectionGuard(limit=limit, header_timeout_s=config.header_timeout_s)
        hashed = config.access_code_hash
        self.state = WebState(
            config=config,
            status=status,
            assets=Assets(language=config.language, refresh_s=config.refresh_s),
            metrics=metrics_registry(status, web_stats=self.stats),
            guard=self.guard,
            sessions=Sessions(ttl_s=config.session_ttl_s),
            limiter=LoginLimiter(attempts=config.login_attempts, window_s=config.login_window_s),
            log_tail=LogTail(),
            on_audit=on_audit or AuditLog(),
            snapshot_root=snapshot_root,
            live_frame=live_frame,
            access=None if hashed is None else AccessCode.parse(hashed.get_secret_value()),
        )
        self._runner = web.AppRunner(
            build_app(self.state), handle_signals=False, access_log=None, keepalive_timeout=75
        )
        self._server: asyncio.Server | None = None
        self._accept_filter = AcceptErrorFilter()
        self.port: int | None = None

    def stats(self) -> dict[str, object]:
        return {
            "connections": self.guard.active,
            "connection_limit": self.guard.limit,
            **self.guard.counters,
            "logins": dict(self.state.logins),
        }

    async def __aenter__(self) -> StatusServer:
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        where = f"{self.config.host}:{self.config.port}"
        try:
            self._server = await asyncio.get_running_loop().create_server(
                self.guard.factory(server), self.config.host, self.config.port, backlog=BACKLOG
            )
        except OSError as exc:
            await self._runner.cleanup()
            if isinstance(exc, socket.gaierror):
                raise ConfigError(
                    [
                        f"web.host: cannot resolve {self.config.host!r} ({exc.strerror}); use an"
                        " address of this host such as 127.0.0.1 or 0.0.0.0"
                    ]
                ) from exc
            key = "web.host" if exc.errno == errno.EADDRNOTAVAIL else "web.port"
            raise ConfigError(
                [
                    f"{key}: the status page cannot listen on {where}: {exc.strerror or exc};"
                    " set [web] port to a free port, host to an address of this host, or"
                    " enabled = false"
                ]
            ) from exc
        sockets = self._server.sockets
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        logging.getLogger("asyncio").addFilter(self._accept_filter)
        logging.getLogger().addHandler(self.state.log_tail)
        self.health.set_state(State.OK, reason("listening", "listening", port=self.port))
        log.info(
            "status page on http://%s:%s/ (at most %d connections)",
            self.config.host,
            self.port,
            self.guard.limit,
        )
        return self

    async def run(self) -> None:
        while True:
            self.status.observe()
            self.guard.shed.flush()
            self.state.sessions.expire()
            self.health.beat(TICK_S + 5.0)
            await asyncio.sleep(TICK_S)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        logging.getLogger().removeHandler(self.state.log_tail)
        logging.getLogger("asyncio").removeFilter(self._accept_filter)
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._runner.cleanup()
        if server is not None:
            await server.wait_closed()
        self.guard.shed.flush(force=True)
        self.health.set_state(State.STOPPED)
