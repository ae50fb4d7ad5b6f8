"""The status page server: HTML for field staff, JSON, /healthz and /metrics. Read-only."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from importlib import resources
from types import TracebackType
from typing import Any

from aiohttp import web

from edge_agent.config import WebConfig
from edge_agent.errors import ConfigError
from edge_agent.health import ComponentHealth, State, reason

log = logging.getLogger(__name__)

StatusProvider = Callable[[], dict[str, Any]]
STATUS_KEY: web.AppKey[StatusProvider] = web.AppKey("status")


def _page() -> bytes:
    return resources.files("edge_agent.web").joinpath("static/index.html").read_bytes()


async def index(request: web.Request) -> web.Response:
    return web.Response(body=_page(), content_type="text/html", charset="utf-8")


async def api_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATUS_KEY]())


async def healthz(request: web.Request) -> web.Response:
    status = request.app[STATUS_KEY]()
    code = 503 if status["state"] == State.FAILING.value else 200
    return web.json_response(
        {"state": status["state"], "reasons": status.get("reasons", [])}, status=code
    )


def _metric_name(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).lower()


async def metrics(request: web.Request) -> web.Response:
    status = request.app[STATUS_KEY]()
    states = [s.value for s in State]
    lines = [
        "# HELP edge_agent_component_state 1 for the component's current state.",
        "# TYPE edge_agent_component_state gauge",
    ]
    for comp in status["components"]:
        for state in states:
            lines.append(
                f'edge_agent_component_state{{component="{comp["name"]}",state="{state}"}}'
                f" {int(comp['state'] == state)}"
            )
    lines += ["# TYPE edge_agent_component_counter counter"]
    for comp in status["components"]:
        for counter, value in sorted(comp["counters"].items()):
            lines.append(
                f'edge_agent_component_counter{{component="{comp["name"]}",'
                f'counter="{_metric_name(counter)}"}} {value}'
            )
    lines += [
        "# HELP edge_agent_component_fact Numeric facts a component reports"
        " (outbox pending rows and bytes, drops, ages...).",
        "# TYPE edge_agent_component_fact gauge",
    ]
    for comp in status["components"]:
        for fact, value in sorted(comp["facts"].items()):
            if isinstance(value, int | float) and not isinstance(value, bool):
                lines.append(
                    f'edge_agent_component_fact{{component="{comp["name"]}",'
                    f'fact="{_metric_name(fact)}"}} {value}'
                )
    lines += ["# TYPE edge_agent_host gauge"]
    for key, value in sorted(status.get("host", {}).items()):
        if isinstance(value, int | float):
            lines.append(f'edge_agent_host{{fact="{key}"}} {value}')
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def build_app(status: StatusProvider) -> web.Application:
    app = web.Application()
    app[STATUS_KEY] = status
    app.router.add_get("/", index)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


class StatusServer:
    """Serves the page on `[web] host:port`; embedded with `AppRunner(handle_signals=False)`."""

    name = "web"

    def __init__(
        self, config: WebConfig, *, status: StatusProvider, health: ComponentHealth
    ) -> None:
        self.config = config
        self.health = health
        self._runner = web.AppRunner(build_app(status), handle_signals=False, access_log=None)
        self.port: int | None = None

    async def __aenter__(self) -> StatusServer:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            where = f"{self.config.host}:{self.config.port}"
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
                    f"{key}: the status page cannot listen on {where}: {exc.strerror}; set [web]"
                    " port to a free port, host to an address of this host, or enabled = false"
                ]
            ) from exc
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        url = f"http://{self.config.host}:{self.port}/"
        self.health.set_state(State.OK, reason("listening", url, url=url))
        log.info("status page on http://%s:%s/", self.config.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._runner.cleanup()
        self.health.set_state(State.STOPPED)
