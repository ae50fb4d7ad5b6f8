"""The facts of `/api/status`, built from what app.py hands over; never written here.

The shape is documented in docs/status-api.md and its JSON Schema ships as
`edge_agent/schema/status.schema.json`. Reasons travel as codes and params, never as
English sentences, so the page can say them in the reader's language. Public answers carry
only numeric, boolean and a few named string params; free text (error messages, reason
texts, broker addresses) is given only with `details` (a logged-in page, or the IOC's
`status` command).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_agent.config import Settings
from edge_agent.health import ComponentHealth, HealthRegistry, Reason
from edge_agent.web.problems import ProblemLog
from edge_agent.web.recent import Recent

API_VERSION = 1
FPS_WINDOW_S = 10.0
# String params that are names we chose, never free text or configuration values.
PUBLIC_STRING_PARAMS = frozenset({"component", "camera", "sensor", "quantity", "file", "kind"})
HOST_FACTS = {
    "cpu_percent": "cpu_percent",
    "cpu_count": "cpu_count",
    "load_1m": "load_1m",
    "memory_used_percent": "memory_used_percent",
    "memory_total_bytes": "memory_total_bytes",
    "disk_used_percent": "disk_used_percent",
    "disk_free_bytes": "disk_free_bytes",
    "disk_total_bytes": "disk_total_bytes",
    "cpu_temperature_c": "temperature_c",
    "uptime_s": "uptime_s",
    "process_rss_bytes": "process_rss_bytes",
    "clock_synchronised": "clock_synchronised",
}

HostSource = Callable[[], tuple[Mapping[str, Any], float | None]]
StatsSource = Callable[[], Mapping[str, Any] | None]


@dataclass(frozen=True)
class NodeIdentity:
    id: str
    district: str
    province: str
    version: str
    config_hash: str


def public_params(params: Mapping[str, Any], *, details: bool) -> dict[str, Any]:
    if details:
        return dict(params)
    return {
        key: value
        for key, value in params.items()
        if value is None
        or isinstance(value, bool | int | float)
        or (key in PUBLIC_STRING_PARAMS and isinstance(value, str))
    }


def _reason(why: Reason | None, *, details: bool) -> dict[str, Any] | None:
    if why is None:
        return None
    out: dict[str, Any] = {"code": why.code, "params": public_params(why.params, details=details)}
    if details:
        out["text"] = why.text
    return out


class NodeStatus:
    """Builds the status facts; `observe()` samples what needs a rate or a history."""

    def __init__(
        self,
        settings: Settings,
        *,
        identity: NodeIdentity,
        registry: HealthRegistry,
        recent: Recent,
        host: HostSource,
        publisher_stats: StatsSource | None = None,
        problems: ProblemLog | None = None,
        redact: Callable[[Any], Any] | None = None,
    ) -> None:
        self.settings = settings
        # Details may quote a URL from the config (an error text): masked on the way out.
        self.redact = redact
        self.identity = identity
        self.registry = registry
        self.recent = recent
        self.host = host
        self.publisher_stats = publisher_stats
        self.problems = problems or ProblemLog()
        self._frames: dict[str, deque[tuple[float, float]]] = {}

    def observe(self) -> None:
        """Sample the verdict into the problem history and frame counters into rates."""
        self.problems.observe(self.registry.verdict().findings)
        now = time.monotonic()
        for camera in self._cameras():
            health = self.registry.get(f"analysis:{camera.name}")
            if health is None:
                continue
            samples = self._frames.setdefault(camera.name, deque())
            samples.append((now, float(health.counters.get("frames_analysed", 0))))
            while len(samples) > 2 and now - samples[1][0] >= FPS_WINDOW_S:
                samples.popleft()

    def analysed_fps(self, camera: str) -> float | None:
        samples = self._frames.get(camera)
        if not samples or len(samples) < 2:
            return None
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        return round((n1 - n0) / (t1 - t0), 2) if t1 > t0 else None

    def _cameras(self) -> list[Any]:
        return [c for c in self.settings.cameras if c.enabled]

    def build(self, *, details: bool = False, logged_in: bool = False) -> dict[str, Any]:
        facts = self._build(details=details, logged_in=logged_in)
        if self.redact is not None:
            masked: dict[str, Any] = self.redact(facts)
            return masked
        return facts

    def _build(self, *, details: bool, logged_in: bool) -> dict[str, Any]:
        now = time.time()
        verdict = self.registry.verdict()
        self.problems.observe(verdict.findings, now)
        outbox = self._outbox()
        node = self.identity
        return {
            "v": API_VERSION,
            "node": {
                "id": node.id,
                "district": node.district,
                "province": node.province,
                "version": node.version,
                "config_hash": node.config_hash,
            },
            "time": now,
            "started_at": self.registry.started_at,
            "verdict": verdict.state.value,
            "reasons": [
                {
                    "component": f.component,
                    "kind": f.kind,
                    "label": self._label(f.component),
                    "severity": f.severity.value,
                    **(_reason(f.reason, details=details) or {}),
                }
                for f in verdict.findings
            ],
            "sync": self._sync(outbox, now),
            "outbox": outbox,
            "cameras": [self._camera(c, now, logged_in=logged_in) for c in self._cameras()],
            "sensors": [self._sensor(s, now) for s in self.settings.sensors if s.enabled],
            "air_quality": sorted(self.recent.air_quality.values(), key=lambda a: a["sensor"]),
            "host": self._host(),
            "problems": [
                {**p, "params": public_params(p["params"], details=details)}
                for p in self.problems.entries()
            ],
            "components": [self._component(c, details=details) for c in self.registry],
            "access": {
                "configured": self.settings.web.access_code_hash is not None,
                "logged_in": logged_in,
            },
        }

    def _label(self, component: str) -> str | None:
        health = self.registry.get(component)
        return None if health is None else health.label

    def _component(self, c: ComponentHealth, *, details: bool) -> dict[str, Any]:
        snap = c.snapshot()
        out: dict[str, Any] = {
            "name": snap["name"],
            "kind": snap["kind"],
            "label": snap["label"],
            "state": snap["state"],
            "since": snap["since"],
            "reason": _reason(c.reason, details=details),
        }
        if details:
            out["last_error"] = snap["last_error"]
            out["counters"] = snap["counters"]
        return out

    def _outbox(self) -> dict[str, Any]:
        health = self.registry.get("outbox")
        if health is None:
            return {"state": "stopped", "dropped": {}}
        snap = health.snapshot()
        facts = snap["facts"]
        numbers = {
            key: facts.get(key)
            for key in (
                "pending_rows",
                "pending_bytes",
                "oldest_pending_age_s",
                "file_bytes",
                "max_bytes",
                "written",
                "acked",
                "last_seq",
                "write_rate_per_s",
                "ack_rate_per_s",
                "disk_write_bytes",
                "disk_write_bytes_per_hour",
                "flash_wear_gb_per_day",
            )
        }
        return {
            "state": snap["state"],
            "since": snap["since"],
            **numbers,
            "epoch": facts.get("epoch"),
            "dropped": {
                key.removeprefix("dropped_"): value
                for key, value in facts.items()
                if key.startswith("dropped_") and isinstance(value, int)
            },
        }

    def _sync(self, outbox: Mapping[str, Any], now: float) -> dict[str, Any]:
        link = self.registry.get("sync")
        publisher = self.registry.get("publisher")
        pending = {
            "pending_rows": outbox.get("pending_rows"),
            "pending_bytes": outbox.get("pending_bytes"),
            "oldest_pending_age_s": outbox.get("oldest_pending_age_s"),
            "dropped": outbox.get("dropped", {}),
            "send_rate_per_s": outbox.get("ack_rate_per_s"),
        }
        if link is None:
            return {"enabled": False, "state": "stopped", "connected": False, **pending}
        snap = link.snapshot()
        counters = snap["counters"]
        connects = int(counters.get("connects", 0))
        last_ack = None
        rejected = 0
        inflight = None
        if publisher is not None:
            pub = publisher.snapshot()
            age = pub["progress_age_s"]
            last_ack = None if age is None else now - age
            rejected = int(pub["counters"].get("rejected_by_broker", 0))
            inflight = pub["facts"].get("inflight")
        stats = self.publisher_stats() if self.publisher_stats else None
        return {
            "enabled": True,
            "state": snap["state"],
            "since": snap["since"],
            "connected": snap["state"] == "ok",
            "reason": _reason(link.reason, details=False),
            "last_ack_at": last_ack,
            "connects": connects,
            "reconnects": max(0, connects - 1),
            "connect_failures": int(counters.get("connect_failures", 0)),
            "rejected_by_broker": rejected,
            "inflight": inflight if isinstance(inflight, int) else None,
            "published": None if stats is None else {k: int(v) for k, v in stats.items()},
            **pending,
        }

    def _camera(self, config: Any, now: float, *, logged_in: bool) -> dict[str, Any]:
        capture = self.registry.get(f"camera:{config.name}")
        analysis = self.registry.get(f"analysis:{config.name}")
        activity = self.recent.cameras.get(config.name)
        snap = capture.snapshot() if capture is not None else None
        facts = snap["facts"] if snap else {}
        counters = snap["counters"] if snap else {}
        out: dict[str, Any] = {
            "name": config.name,
            "label": config.label,
            "state": snap["state"] if snap else "stopped",
            "since": snap["since"] if snap else None,
            "online": facts.get("online"),
            "reason": _reason(capture.reason if capture else None, details=False),
            "fps_target": config.fps,
            "fps_source": facts.get("source_fps"),
            "fps_analysed": self.analysed_fps(config.name),
            "frames_dropped": int(counters.get("frames_dropped", 0)),
            "detector": analysis.facts.get("detector") if analysis is not None else None,
            "last_detection": activity.last_detection if activity else None,
            "today": activity.today_counts(now)
            if activity
            else {"date": time.strftime("%Y-%m-%d", time.localtime(now)), "counts": {}},
        }
        if logged_in:
            out["thumbnail"] = {
                "url": f"camera/{config.name}/thumbnail.jpg",
                "boxes": list(activity.last_frame) if activity and activity.snapshot else [],
            }
        return out

    def _sensor(self, config: Any, now: float) -> dict[str, Any]:
        health = self.registry.get(f"sensor:{config.name}")
        snap = health.snapshot() if health is not None else None
        counters = snap["counters"] if snap else {}
        return {
            "name": config.name,
            "label": config.label,
            "kind": config.kind,
            "state": snap["state"] if snap else "stopped",
            "since": snap["since"] if snap else None,
            "reason": _reason(health.reason if health else None, details=False),
            "last_read": snap["facts"].get("last_read") if snap else None,
            "readings": int(counters.get("readings", 0)),
            "errors": int(counters.get("errors", 0)),
            "values": self.recent.sensor_values(config.name, now),
        }

    def _host(self) -> dict[str, Any]:
        facts, taken_at = self.host()
        out: dict[str, Any] = {
            name: facts[key] for key, name in HOST_FACTS.items() if facts.get(key) is not None
        }
        out["taken_at"] = taken_at
        return out
