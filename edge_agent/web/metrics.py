"""`/metrics`: a prometheus-client collector over the health registry and the status facts.

No exposition is written by hand: the families are built here and prometheus-client encodes
them (Prometheus text or OpenMetrics, as the scraper asks). Each scrape reads the cached
host snapshot and the components' counters; nothing here runs psutil or touches a disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from edge_agent.health import State
from edge_agent.web.facts import NodeStatus

PREFIX = "edge_agent"
STATES = [s.value for s in State]
WebStats = Callable[[], Mapping[str, Any]]
# (type, name, key in the source, help, unit): one unlabelled family each.
Spec = tuple[str, str, str, str, str]

OUTBOX: list[Spec] = [
    ("gauge", "outbox_pending_rows", "pending_rows", "Rows waiting to be sent.", ""),
    ("gauge", "outbox_pending_bytes", "pending_bytes", "Bytes waiting to be sent.", "bytes"),
    (
        "gauge",
        "outbox_oldest_pending_age_seconds",
        "oldest_pending_age_s",
        "Age of the oldest row waiting to be sent (0 when none waits).",
        "seconds",
    ),
    ("gauge", "outbox_file_bytes", "file_bytes", "Size of the outbox database.", "bytes"),
    ("gauge", "outbox_limit_bytes", "max_bytes", "The byte cap, outbox.max_bytes.", "bytes"),
    ("counter", "outbox_written_rows", "written", "Rows committed to the outbox.", ""),
    ("counter", "outbox_acked_rows", "acked", "Rows deleted once the broker confirmed.", ""),
    ("counter", "outbox_write_errors", "write_errors", "Failed commits (retried).", ""),
    ("counter", "outbox_refused_events", "refused", "Events refused (NaN, too large).", ""),
    (
        "counter",
        "outbox_disk_written_bytes",
        "disk_write_bytes",
        "Bytes the outbox wrote to the device since start (WAL, checkpoints, seq ledger).",
        "bytes",
    ),
    (
        "gauge",
        "outbox_disk_write_rate_bytes_per_hour",
        "disk_write_bytes_per_hour",
        "Bytes the outbox wrote to the device over the last hour, per hour.",
        "",
    ),
    (
        "gauge",
        "outbox_flash_wear_bytes_per_day",
        "flash_wear_bytes_per_day",
        "Plain estimate of the bytes the outbox writes to the flash per day at that rate.",
        "",
    ),
]
SYNC: list[Spec] = [
    ("gauge", "sync_connected", "connected", "1 while the link to the broker is up.", ""),
    ("counter", "sync_connects", "connects", "Successful connections to the broker.", ""),
    ("counter", "sync_connect_failures", "connect_failures", "Failed connection attempts.", ""),
    ("counter", "sync_commands", "commands", "Commands received.", ""),
    ("counter", "sync_published_messages", "messages", "MQTT messages published.", ""),
    ("counter", "sync_published_batches", "batches", "Batch messages published.", ""),
    ("counter", "sync_published_events", "events", "Events published, alone or batched.", ""),
    ("counter", "sync_published_bytes", "bytes", "Payload bytes published.", "bytes"),
    ("counter", "sync_acked_events", "acked", "Events the broker confirmed (PUBACK).", ""),
    (
        "counter",
        "sync_rejected_events",
        "rejected_by_broker",
        "Events the broker refused (kept and retried).",
        "",
    ),
]
HOST: list[Spec] = [
    ("gauge", "host_cpu_usage_ratio", "cpu", "CPU in use, all cores (0 to 1).", "ratio"),
    ("gauge", "host_memory_usage_ratio", "memory", "Memory in use (0 to 1).", "ratio"),
    ("gauge", "host_disk_usage_ratio", "disk", "State dir's disk in use (0 to 1).", "ratio"),
    ("gauge", "host_disk_free_bytes", "disk_free_bytes", "Free bytes on that disk.", "bytes"),
    ("gauge", "host_memory_total_bytes", "memory_total_bytes", "Memory of the host.", "bytes"),
    ("gauge", "host_load1", "load_1m", "Load average over one minute.", ""),
    ("gauge", "host_temperature_celsius", "cpu_temperature_c", "CPU temperature.", "celsius"),
    ("gauge", "host_uptime_seconds", "uptime_s", "Seconds since the host booted.", "seconds"),
    (
        "gauge",
        "host_clock_synchronised",
        "clock_synchronised",
        "1 when the kernel says NTP keeps the clock synchronised.",
        "",
    ),
    (
        "gauge",
        "process_resident_memory_bytes",
        "process_rss_bytes",
        "The agent's resident memory.",
        "bytes",
    ),
    ("gauge", "host_snapshot_time_seconds", "taken_at", "When the host facts were taken.", ""),
]
WEB: list[Spec] = [
    ("gauge", "web_connections", "connections", "Open status page connections.", ""),
    ("gauge", "web_connection_limit", "connection_limit", "The cap on connections.", ""),
    ("counter", "web_connections_accepted", "accepted", "Connections accepted.", ""),
]
CAMERA_COUNTERS = {
    "frames_captured": "Frames read from the source.",
    "frames_skipped": "Frames read but not due at the camera's fps.",
    "frames_dropped": "Due frames replaced by a newer one before analysis.",
    "went_offline": "Times the camera went offline.",
}
SENSOR_COUNTERS = {
    "readings": ("sensor_readings", "Usable values read."),
    "errors": ("sensor_read_errors", "Failed reads."),
    "timeouts": ("sensor_read_timeouts", "Reads that took longer than timeout_s."),
    "bad": ("sensor_bad_values", "Values sent as bad (NaN, out of range)."),
    "suspect": ("sensor_suspect_values", "Values sent as suspect (stuck)."),
}


def _num(value: Any) -> float | None:
    if isinstance(value, bool | int | float):
        return float(value)
    return None


def _simple(specs: Iterable[Spec], source: Mapping[str, Any]) -> Iterator[Metric]:
    for kind, name, key, doc, unit in specs:
        value = _num(source.get(key))
        if value is None:
            continue
        family = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
        yield family(f"{PREFIX}_{name}", doc, value=value, unit=unit)


def _labelled(kind: str, name: str, doc: str, labels: list[str]) -> Any:
    family = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
    return family(f"{PREFIX}_{name}", doc, labels=labels)


class AgentCollector(Collector):
    """Every family the agent exports, read fresh at each scrape."""

    def __init__(self, status: NodeStatus, *, web_stats: WebStats | None = None) -> None:
        self.status = status
        self.web_stats = web_stats

    def collect(self) -> Iterator[Metric]:
        yield from self._node()
        yield from self._outbox()
        yield from self._sync()
        yield from self._cameras()
        yield from self._sensors()
        yield from self._host()
        yield from self._web()

    def _node(self) -> Iterator[Metric]:
        node = self.status.identity
        info = InfoMetricFamily(f"{PREFIX}_build", "The agent's version and identity.")
        labels = {"version": node.version, "node": node.id, "district": node.district}
        info.add_metric([], {**labels, "province": node.province, "config_hash": node.config_hash})
        yield info
        registry = self.status.registry
        yield GaugeMetricFamily(
            f"{PREFIX}_start_time_seconds", "When the agent started.", value=registry.started_at
        )
        verdict = registry.verdict()
        family = _labelled("gauge", "verdict", "1 for the node's verdict.", ["state"])
        for state in ("ok", "degraded", "failing"):
            family.add_metric([state], float(verdict.state.value == state))
        yield family
        reasons = _labelled(
            "gauge",
            "reason",
            "1 for each reason behind the verdict.",
            ["component", "code", "severity"],
        )
        for finding in verdict.findings:
            reasons.add_metric(
                [finding.component, finding.reason.code, finding.severity.value], 1.0
            )
        yield reasons
        states = _labelled(
            "gauge",
            "component_state",
            "1 for each component's current state.",
            ["component", "kind", "state"],
        )
        for health in registry:
            for state in STATES:
                states.add_metric(
                    [health.name, health.kind, state], float(health.state.value == state)
                )
        yield states

    def _outbox(self) -> Iterator[Metric]:
        health = self.status.registry.get("outbox")
        if health is None:
            return
        snap = health.snapshot()
        facts = snap["facts"]
        source = {**snap["counters"], **facts}
        source["oldest_pending_age_s"] = facts.get("oldest_pending_age_s") or 0.0
        per_hour = _num(facts.get("disk_write_bytes_per_hour"))
        if per_hour is not None:
            source["flash_wear_bytes_per_day"] = per_hour * 24
        yield from _simple(OUTBOX, source)
        dropped = _labelled(
            "counter",
            "outbox_dropped_rows",
            "Rows dropped before delivery, by reason (ttl, quota, corrupt, disk_full).",
            ["reason"],
        )
        for key, value in sorted(facts.items()):
            if key.startswith("dropped_") and _num(value) is not None:
                dropped.add_metric([key.removeprefix("dropped_")], float(value))
        yield dropped

    def _sync(self) -> Iterator[Metric]:
        registry = self.status.registry
        link = registry.get("sync")
        if link is None:
            return
        snap = link.snapshot()
        source: dict[str, Any] = {**snap["counters"], "connected": snap["state"] == "ok"}
        source.setdefault("connects", 0)
        source.setdefault("connect_failures", 0)
        source.setdefault("commands", 0)
        stats = self.status.publisher_stats() if self.status.publisher_stats else None
        source.update(stats or {})
        publisher = registry.get("publisher")
        if publisher is not None:
            counters = publisher.snapshot()["counters"]
            source["acked"] = counters.get("acked", 0)
            source["rejected_by_broker"] = counters.get("rejected_by_broker", 0)
        yield from _simple(SYNC, source)
        rejected = _labelled("counter", "sync_commands_rejected", "Commands refused.", ["code"])
        for key, value in sorted(snap["counters"].items()):
            if key.startswith("commands_rejected_"):
                rejected.add_metric([key.removeprefix("commands_rejected_")], float(value))
        yield rejected

    def _cameras(self) -> Iterator[Metric]:
        registry = self.status.registry
        camera = ["camera"]
        up = _labelled("gauge", "camera_up", "1 while the camera is online.", camera)
        analysed_fps = _labelled(
            "gauge",
            "camera_analysed_frames_per_second",
            "Frames analysed per second over the last 10 s.",
            camera,
        )
        source_fps = _labelled(
            "gauge",
            "camera_source_frames_per_second",
            "The source's own frame rate (0 when it does not say).",
            camera,
        )
        analysed = _labelled("counter", "camera_frames_analysed", "Frames analysed.", camera)
        totals = {
            key: _labelled("counter", f"camera_{key}", doc, camera)
            for key, doc in CAMERA_COUNTERS.items()
        }
        detections = _labelled(
            "counter",
            "camera_detections",
            "Objects detected entering a zone since start, by class.",
            ["camera", "label"],
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_detector_latency_seconds",
            "Time of one detector run (preprocess, model, decode).",
            labels=camera,
            unit="seconds",
        )
        for config in [c for c in self.status.settings.cameras if c.enabled]:
            name = [config.name]
            capture = registry.get(f"camera:{config.name}")
            if capture is not None:
                snap = capture.snapshot()
                up.add_metric(name, float(bool(snap["facts"].get("online"))))
                source_fps.add_metric(name, float(snap["facts"].get("source_fps") or 0.0))
                for key, family in totals.items():
                    family.add_metric(name, float(snap["counters"].get(key, 0)))
            fps = self.status.analysed_fps(config.name)
            if fps is not None:
                analysed_fps.add_metric(name, fps)
            analysis = registry.get(f"analysis:{config.name}")
            if analysis is not None:
                snap = analysis.snapshot()
                analysed.add_metric(name, float(snap["counters"].get("frames_analysed", 0)))
                histogram = snap["facts"].get("detect_latency_s")
                if isinstance(histogram, Mapping):
                    _add_histogram(latency, config.name, histogram)
            activity = self.status.recent.cameras.get(config.name)
            for label, n in sorted(activity.totals.items() if activity else []):
                detections.add_metric([config.name, label], float(n))
        yield from (up, analysed_fps, source_fps, analysed, *totals.values(), detections, latency)

    def _sensors(self) -> Iterator[Metric]:
        sensor = ["sensor"]
        up = _labelled("gauge", "sensor_up", "1 while the sensor answers.", sensor)
        totals = {
            key: _labelled("counter", name, doc, sensor)
            for key, (name, doc) in SENSOR_COUNTERS.items()
        }
        for config in [s for s in self.status.settings.sensors if s.enabled]:
            health = self.status.registry.get(f"sensor:{config.name}")
            if health is None:
                continue
            snap = health.snapshot()
            up.add_metric([config.name], float(snap["state"] in ("ok", "degraded")))
            for key, family in totals.items():
                family.add_metric([config.name], float(snap["counters"].get(key, 0)))
        yield up
        yield from totals.values()

    def _host(self) -> Iterator[Metric]:
        facts, taken_at = self.status.host()
        source: dict[str, Any] = {**facts, "taken_at": taken_at}
        for key, percent in (
            ("cpu", "cpu_percent"),
            ("memory", "memory_used_percent"),
            ("disk", "disk_used_percent"),
        ):
            value = _num(facts.get(percent))
            source[key] = None if value is None else value / 100.0
        yield from _simple(HOST, source)

    def _web(self) -> Iterator[Metric]:
        if self.web_stats is None:
            return
        stats = self.web_stats()
        yield from _simple(WEB, stats)
        closed = _labelled(
            "counter",
            "web_connections_closed",
            "Connections closed to protect the node, by why (timed_out, evicted, refused).",
            ["reason"],
        )
        for key in ("timed_out", "evicted", "refused"):
            closed.add_metric([key], float(stats.get(key, 0)))
        yield closed
        logins = _labelled("counter", "web_logins", "Login attempts, by outcome.", ["outcome"])
        for outcome, n in sorted(stats.get("logins", {}).items()):
            logins.add_metric([outcome], float(n))
        yield logins


def _add_histogram(
    family: HistogramMetricFamily, camera: str, histogram: Mapping[str, Any]
) -> None:
    bounds = list(histogram.get("bounds", ()))
    counts = list(histogram.get("counts", ()))
    if len(counts) != len(bounds) + 1:
        return
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for bound, count in zip(bounds, counts[:-1], strict=True):
        running += count
        buckets.append((repr(float(bound)), running))
    buckets.append(("+Inf", running + counts[-1]))
    family.add_metric([camera], buckets, sum_value=float(histogram.get("sum", 0.0)))


def metrics_registry(status: NodeStatus, *, web_stats: WebStats | None = None) -> CollectorRegistry:
    """A registry of our own (never the process-global default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(status, web_stats=web_stats))
    return registry
