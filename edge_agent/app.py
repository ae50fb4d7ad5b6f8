"""The composition root: builds every component, enters them in dependency order, runs them
in one TaskGroup, and closes them in reverse order on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from edge_agent import __version__
from edge_agent.audit import Auditor
from edge_agent.config import Settings, config_hash, effective_config
from edge_agent.config.editing import edit_config, restore_backup
from edge_agent.config.loader import redactor
from edge_agent.config.mqtt import generic_node_id
from edge_agent.contract import Kind
from edge_agent.derive.component import DerivedStreams
from edge_agent.errors import CameraError, ConfigError, EdgeAgentError, UnknownCameraError
from edge_agent.export.component import StationExport
from edge_agent.health import HealthRegistry, Role, State
from edge_agent.host import HostMonitor
from edge_agent.notify import Notifier
from edge_agent.outbox import Outbox
from edge_agent.sensors.base import Poller
from edge_agent.sensors.registry import build_driver
from edge_agent.sync import Applied, NodeInfo, Sync
from edge_agent.sync.commands import ReplyRoute, reply_payload
from edge_agent.sync.component import Notice
from edge_agent.web.facts import NodeIdentity, NodeStatus
from edge_agent.web.recent import Recent
from edge_agent.web.server import AuditLog, StatusServer

if TYPE_CHECKING:
    from edge_agent.inference.snapshots import SnapshotStore
    from edge_agent.sensors.camera import Capture

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 10.0
OUTBOX_FILE = "outbox.sqlite3"
# Kinds whose data never carries text from the config: not walked for secrets (hot path).
_PLAIN_KINDS = frozenset({Kind.READING, Kind.DETECTION, Kind.COUNT})

Clock = Callable[[], float]
Tap = Callable[[Kind, dict[str, Any], str, float], None]


@runtime_checkable
class Runnable(Protocol):
    async def run(self) -> None: ...


class _StopRequested(Exception):
    pass


class _RestartRequested(Exception):
    pass


def check_state_dir(state_dir: Path) -> None:
    """The state dir exists (created if missing) and takes new files; the outbox path is
    free for a file. What fails here a technician fixes, so it is a ConfigError (exit 78)."""

    def problem(what: str) -> ConfigError:
        return ConfigError([f"paths.state_dir: {what} ({state_dir})"])

    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise problem("is a file, not a directory") from None
    except NotADirectoryError:
        raise problem("a part of the path is a file, not a directory") from None
    except OSError as exc:
        raise problem(f"cannot create it: {exc.strerror}") from None
    if not state_dir.is_dir():
        raise problem("is not a directory")
    outbox = state_dir / OUTBOX_FILE
    if outbox.is_dir():
        raise problem(f"{OUTBOX_FILE} is a directory; move it away")
    try:
        with tempfile.TemporaryFile(dir=state_dir):
            pass
    except OSError as exc:
        raise problem(
            f"cannot create files in it: {exc.strerror}; give the agent's user write access"
        ) from None


class _Unconfirmed(Exception):
    pass


@dataclass(frozen=True)
class Trial:
    """A configuration from `config.set` on probation: it must publish a birth within
    `confirm_s`, or `previous` comes back."""

    previous: Settings
    confirm_s: float
    changed: tuple[str, ...]
    route: ReplyRoute | None


@dataclass(frozen=True)
class Rollback:
    """What the generation after a rollback tells the IOC: a reply, an alert, an audit."""

    trial: Trial
    code: str  # "start_failed" | "unconfirmed"
    why: str


class AgentCommands:
    """What remote commands act on: the agent's own status, config and components."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def status(self) -> dict[str, Any]:
        return self.agent.status()

    def config_get(self) -> dict[str, Any]:
        return effective_config(self.agent.settings)

    async def config_set(self, changes: dict[str, Any]) -> Applied:
        path = self.agent.config_path
        if path is None:
            raise ValueError("this node runs on the embedded default; start it with --config")
        settings = await asyncio.to_thread(edit_config, path, changes)
        changed = tuple(sorted(changes))
        self.agent.auditor.record("config_set", "accepted", detail=", ".join(changed))
        return Applied(
            {
                "changed": list(changed),
                "config_hash": config_hash(settings),
                "restart": True,
                "confirm_s": self.agent.settings.mqtt.commands.confirm_s,
            },
            then=lambda route: self.agent.request_restart(settings, changed=changed, route=route),
        )

    async def snapshot(self, camera: str) -> bytes:
        return await self.agent.camera_snapshot(camera)

    async def outbox_stats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.agent.outbox.stats)


class Agent:
    """One agent: its components in dependency order, and the health registry they report to."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        rollback: Rollback | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.rollback = rollback
        self.clock = clock
        self.restart_to: Settings | None = None
        self.restart_changed: tuple[str, ...] = ()
        self.restart_route: ReplyRoute | None = None
        self.restart_requested = asyncio.Event()
        self.birth_published = asyncio.Event()
        self.registry = HealthRegistry(link_unhealthy_after_s=settings.web.unhealthy_after_s)
        self.notifier = Notifier()
        self.config_hash = config_hash(settings)
        self.redactor = redactor(settings)
        state_dir = settings.paths.state_dir
        check_state_dir(state_dir)
        self.outbox = Outbox(
            state_dir / OUTBOX_FILE,
            node=settings.node.id,
            config=settings.outbox,
            health=self.registry.register("outbox", kind="outbox", role=Role.CORE),
        )
        # Security events (rejected commands, logins, config changes) for the province's SOC;
        # the status page gets the same auditor for its logins.
        self.auditor = Auditor(self._audit)
        self._login_log = AuditLog()
        self.host = HostMonitor(state_dir, sink=self._host_health)
        self.components: list[Any] = [self.outbox, self.auditor, self.host]
        # What the page shows of recent readings and detections (fed by _to_outbox).
        self.recent = Recent()
        self.sync: Sync | None = None
        self.node_status = NodeStatus(
            settings,
            identity=NodeIdentity(
                settings.node.id,
                settings.node.district,
                settings.node.province,
                __version__,
                self.config_hash,
            ),
            registry=self.registry,
            recent=self.recent,
            host=lambda: (self.host.latest, self.host.taken_at),
            publisher_stats=self._publisher_stats,
            redact=self.redactor.data,
        )
        # Readers of what the sensors committed. Entered before the sensors, they close after
        # them and still take the readings a sensor flushes when it stops.
        self.taps: list[Tap] = []
        if settings.aqi.enabled or settings.limits.enabled:
            self.derive = DerivedStreams(
                settings.aqi,
                settings.limits,
                state_dir=state_dir,
                sink=self._to_outbox,
                health=self.registry.register("derive", kind="derive"),
                clock=clock,
            )
            self.components.append(self.derive)
            self.taps.append(self.derive.offer)
        if settings.station_export.enabled:
            self.station_export = StationExport(
                settings.station_export,
                state_dir=state_dir,
                sink=self._to_outbox,
                health=self.registry.register("station_export", kind="export"),
                clock=clock,
            )
            self.components.append(self.station_export)
            self.taps.append(self.station_export.offer)
        for sensor in settings.sensors:
            if not sensor.enabled:
                continue
            driver = build_driver(sensor, state_dir=state_dir)
            self.components.append(
                Poller(
                    sensor,
                    driver,
                    sink=self._from_sensor if self.taps else self._to_outbox,
                    health=self.registry.register(
                        f"sensor:{sensor.name}", kind="sensor", role=Role.SOURCE, label=sensor.label
                    ),
                    clock=clock,
                )
            )
        self.captures: dict[str, Capture] = {}
        cameras = [camera for camera in settings.cameras if camera.enabled]
        self.snapshot_stores: dict[str, list[SnapshotStore]] = {}
        if cameras:
            # OpenCV, numpy and onnxruntime cost ~100 MB of RSS: only a node with a camera
            # loads them.
            from edge_agent.inference.classes import detector_floors
            from edge_agent.inference.pipeline import CameraPipeline, InferenceService
            from edge_agent.inference.snapshots import SnapshotStore
            from edge_agent.sensors.camera import Capture

            # One inference thread for all cameras; one capture thread per camera.
            self.inference = InferenceService(
                settings.detector,
                model_dir=settings.paths.model_dir,
                health=self.registry.register("inference", kind="inference"),
                floors=lambda labels: detector_floors(cameras, labels, settings.detector.threshold),
                plates=any(camera.plates.enabled for camera in cameras),
                cameras=len(cameras),
            )
            self.components.append(self.inference)
        for camera in cameras:
            capture = Capture(
                camera,
                sink=self._to_outbox,
                health=self.registry.register(
                    f"camera:{camera.name}", kind="camera", role=Role.SOURCE, label=camera.label
                ),
                cameras=len(cameras),
            )
            self.captures[camera.name] = capture
            snapshots = SnapshotStore(
                state_dir / "snapshots" / camera.name,
                max_count=camera.snapshots_max_count,
                max_bytes=camera.snapshots_max_bytes,
            )
            # Plate snapshots are personal data: their own directory and a retention bound.
            plate_snapshots = SnapshotStore(
                state_dir / "snapshots" / f"{camera.name}.plates",
                max_count=camera.snapshots_max_count,
                max_bytes=camera.snapshots_max_bytes,
                max_age_s=camera.plates.retention_s,
            )
            self.snapshot_stores[camera.name] = [snapshots, plate_snapshots]
            self.components.append(capture)
            self.components.append(
                CameraPipeline(
                    camera,
                    frames=capture.frames.get,
                    take=capture.frames.take,
                    service=self.inference,
                    sink=self._to_outbox,
                    health=self.registry.register(
                        f"analysis:{camera.name}", kind="analysis", label=camera.label
                    ),
                    snapshots=snapshots,
                    plate_snapshots=plate_snapshots if camera.plates.enabled else None,
                )
            )
        if settings.mqtt.enabled:
            self.sync = Sync(
                settings.mqtt,
                node=NodeInfo(
                    settings.node.id,
                    settings.node.district,
                    __version__,
                    self.config_hash,
                    capabilities=("sensors", "commands", "batches"),
                    area=tuple(a.model_dump(exclude_none=True).items())
                    if (a := settings.node.area)
                    else (),
                ),
                outbox=self.outbox,
                handlers=AgentCommands(self),
                health=self.registry.register("sync", kind="sync", role=Role.LINK),
                publisher_health=self.registry.register("publisher", kind="publisher"),
                state_dir=state_dir,
                auditor=self.auditor,
                on_birth=self.birth_published.set,
                notices=self._rollback_notices(),
            )
            self.components.append(self.sync)
        if settings.web.enabled:
            self.web = StatusServer(
                settings.web,
                status=self.node_status,
                health=self.registry.register("web", kind="web"),
                snapshot_root=state_dir / "snapshots",
                live_frame=self.camera_snapshot,
                on_audit=self._page_audit,
            )
            self.components.append(self.web)

    def _page_audit(self, event: str, code: str, source: str, detail: str) -> None:
        """A refused or rate-limited page login: in the log (rate-limited) and, for the
        province's security centre, an `audit` event."""
        self._login_log(event, code, source, detail)
        kind = "login_rate_limited" if code == "rate_limited" else event
        self.auditor.record(kind, code, source=source, detail=detail)

    def request_restart(
        self,
        settings: Settings,
        *,
        changed: tuple[str, ...] = (),
        route: ReplyRoute | None = None,
    ) -> None:
        """Restart the components with `settings` (after a validated `config.set`); `route`
        is where to say so if they have to be rolled back."""
        self.restart_to = settings
        self.restart_changed = changed
        self.restart_route = route
        self.restart_requested.set()

    def _rollback_notices(self) -> list[Notice]:
        rollback = self.rollback
        if rollback is None or rollback.trial.route is None:
            return []
        route = rollback.trial.route
        error = ("rolled_back", rollback.why)
        return [Notice(route, reply_payload(node=self.settings.node.id, route=route, error=error))]

    async def announce_rollback(self) -> None:
        """Tell the IOC (an alert, an audit event) that a config.set was rolled back."""
        rollback = self.rollback
        if rollback is None:
            return
        route = rollback.trial.route
        await self.outbox.put(
            Kind.ALERT,
            {
                "alert": "config_rollback",
                "severity": "error",
                "detail": rollback.why,
                "changed": list(rollback.trial.changed),
                "command_id": None if route is None else route.command_id,
            },
            stream="alert",
        )
        self.auditor.record(
            "config_rollback",
            rollback.code,
            detail=f"{', '.join(rollback.trial.changed)}: {rollback.why}",
        )

    async def _audit(self, data: dict[str, Any], ts: float) -> None:
        await self.outbox.put(Kind.AUDIT, data, stream="audit", ts=ts)

    async def _to_outbox(self, kind: Kind, data: dict[str, Any], stream: str, ts: float) -> None:
        if kind not in _PLAIN_KINDS:
            # State and alert texts may quote a URL from the config (an error message).
            data = self.redactor.data(data)
        await self.outbox.put(kind, data, stream=stream, ts=ts)
        self.recent.observe(kind, data, stream, ts)

    def _publisher_stats(self) -> dict[str, int] | None:
        publisher = self.sync.publisher if self.sync is not None else None
        return None if publisher is None else dict(publisher.stats)

    async def _from_sensor(self, kind: Kind, data: dict[str, Any], stream: str, ts: float) -> None:
        # Write first: the derived streams see a reading only once it is committed.
        await self._to_outbox(kind, data, stream, ts)
        for tap in self.taps:
            tap(kind, data, stream, ts)

    async def _host_health(self, facts: dict[str, Any], ts: float) -> None:
        verdict = self.registry.verdict()
        data = {
            "verdict": verdict.state.value,
            "reasons": [
                {"component": f.component, "code": f.reason.code, "severity": f.severity.value}
                for f in verdict.findings
            ],
            "host": {
                key: value
                for key, value in facts.items()
                if isinstance(value, int | float) and not isinstance(value, bool)
            },
        }
        await self.outbox.put(Kind.HEALTH, data, stream="health", ts=ts)

    async def camera_snapshot(self, camera: str, *, quality: int = 85) -> bytes:
        """The newest frame of `camera` as JPEG bytes (for the `snapshot` command), or, for
        `camera/FILE`, the event snapshot FILE kept on the node (an event's `snapshot`).

        Raises `UnknownCameraError` when no such camera is configured, `CameraError` when it
        has no frame yet or no such kept snapshot.
        """
        camera, _, kept = camera.partition("/")
        capture = self.captures.get(camera)
        if capture is None:
            known = ", ".join(sorted(self.captures)) or "none"
            raise UnknownCameraError(f"no camera named {camera!r} (configured: {known})")
        if kept:
            for store in self.snapshot_stores.get(camera, []):
                data = await asyncio.to_thread(store.read, kept)
                if data is not None:
                    return data
            raise CameraError(f"camera {camera}: no kept snapshot named {kept!r}")
        jpeg = await asyncio.to_thread(capture.latest_jpeg, quality)
        if jpeg is None:
            raise CameraError(f"camera {camera}: no frame captured yet")
        return jpeg

    def status(self) -> dict[str, Any]:
        """The facts `/api/status` shows, with the details a logged-in page sees (the IOC's
        `status` command); secrets masked, since a reason may quote a URL from the config."""
        return self.node_status.build(details=True)


@contextlib.asynccontextmanager
async def _entered(component: Any) -> AsyncIterator[None]:
    name = getattr(component, "name", type(component).__name__)
    async with component:
        log.info("started %s", name)
        try:
            yield
        finally:
            log.info("closing %s", name)
    log.info("closed %s", name)


async def watchdog(registry: HealthRegistry, notifier: Notifier, interval_s: float) -> None:
    """Feed systemd's watchdog while every loop turns and every promised progress comes."""
    withheld = False
    while True:
        stuck = registry.stuck()
        if not stuck:
            if withheld:
                log.info("watchdog fed again: every component makes progress")
                notifier.status("running")
            withheld = False
            notifier.watchdog()
        elif not withheld:
            # Said once per stall, in the log and in `systemctl status`.
            withheld = True
            log.error("watchdog withheld: no progress from %s", ", ".join(stuck))
            notifier.status(f"watchdog withheld: no progress from {', '.join(stuck)}")
        await asyncio.sleep(interval_s)


def _is_setup_error(exc: BaseException) -> bool:
    return isinstance(exc, EdgeAgentError) and exc.exit_code == 78


async def run_agent(
    settings: Settings, *, config_path: Path | None = None, clock: Clock = time.time
) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until a component fails for good (exit 1).

    A validated `config.set` restarts every component (the outbox too: it reopens in
    milliseconds and keeps every row) with the new settings, on probation: unless they
    start and publish a birth within `mqtt.commands.confirm_s` (of the settings that
    accepted the change), the previous file and settings are restored and started again,
    and the IOC is told (a reply, an alert, an audit event). `clock` stamps readings and
    drives the derived streams (tests inject one to fast-forward time)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if generic_node_id(settings.node.id, explicit="id" in settings.node.model_fields_set):
        log.warning(
            "node id %r comes from a generic host name: two nodes with one id knock each other"
            " off the broker; set [node] id",
            settings.node.id,
        )
    trial: Trial | None = None
    rollback: Rollback | None = None
    try:
        while True:
            agent = Agent(settings, config_path=config_path, rollback=rollback, clock=clock)
            rollback = None
            outcome, exit_code = await _run_generation(agent, stop, trial=trial)
            if outcome == "restart" and agent.restart_to is not None:
                log.info("configuration changed: restarting components")
                trial = Trial(
                    previous=settings,
                    confirm_s=settings.mqtt.commands.confirm_s,
                    changed=agent.restart_changed,
                    route=agent.restart_route,
                )
                settings = agent.restart_to
                continue
            if outcome in ("start_failed", "unconfirmed") and trial and config_path is not None:
                why = (
                    "the new configuration failed to start"
                    if outcome == "start_failed"
                    else f"no birth published within {trial.confirm_s:.0f} s of the change"
                )
                log.error("%s; rolling back to the previous configuration", why)
                restore_backup(config_path)
                rollback = Rollback(trial, outcome, why)
                settings, trial = trial.previous, None
                continue
            return exit_code
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _confirm(agent: Agent, deadline: float) -> None:
    try:
        async with asyncio.timeout_at(deadline):
            await agent.birth_published.wait()
    except TimeoutError:
        raise _Unconfirmed from None
    log.info("new configuration confirmed: the node reached the broker and published its birth")


async def _run_generation(
    agent: Agent, stop: asyncio.Event, *, trial: Trial | None
) -> tuple[str, int]:
    """Enter, run and close one set of components:
    ("stop" | "restart" | "start_failed" | "unconfirmed", exit code)."""
    stack = contextlib.AsyncExitStack()
    exit_code = 0
    outcome = "stop"
    entering = True
    # The probation starts with the generation: entering counts against it.
    deadline = None if trial is None else asyncio.get_running_loop().time() + trial.confirm_s
    try:
        for component in agent.components:
            await stack.enter_async_context(_entered(component))
            if stop.is_set():
                raise _StopRequested
        entering = False
        await agent.announce_rollback()
        agent.notifier.ready(f"running {len(agent.components)} components")
        log.info("edge-agent %s running as node %s", __version__, agent.settings.node.id)

        async def stopper() -> None:
            stop_wait = asyncio.ensure_future(stop.wait())
            restart_wait = asyncio.ensure_future(agent.restart_requested.wait())
            await asyncio.wait([stop_wait, restart_wait], return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            restart_wait.cancel()
            if stop.is_set():
                log.info("stop requested, shutting down")
                raise _StopRequested
            raise _RestartRequested

        async with asyncio.TaskGroup() as tg:
            tg.create_task(stopper(), name="stopper")
            if agent.notifier.watchdog_interval_s:
                tg.create_task(
                    watchdog(agent.registry, agent.notifier, agent.notifier.watchdog_interval_s)
                )
            for component in agent.components:
                if isinstance(component, Runnable):
                    tg.create_task(component.run(), name=getattr(component, "name", "component"))
            if deadline is not None:
                tg.create_task(_confirm(agent, deadline), name="confirm")
    except* _StopRequested:
        pass
    except* _RestartRequested:
        outcome = "restart"
    except* _Unconfirmed:
        outcome = "unconfirmed"
    except* Exception as group:
        for exc in group.exceptions:
            if isinstance(exc, EdgeAgentError):
                log.error("fatal: %s", exc)
            else:
                log.error("fatal: %s", exc, exc_info=exc)
        # What stopped the start is the technician's to fix (config, files): 78 keeps systemd
        # from restarting into the same wall. Anything else a restart may cure: 1.
        exit_code = 78 if entering and all(_is_setup_error(e) for e in group.exceptions) else 1
        if entering and trial is not None:
            outcome = "start_failed"
    finally:
        if outcome != "restart":
            agent.notifier.stopping()
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await stack.aclose()
        except TimeoutError:
            log.error("shutdown took longer than %.0f s; exiting anyway", SHUTDOWN_TIMEOUT_S)
            exit_code = exit_code or 1
    for health in agent.registry:
        health.set_state(State.STOPPED)
    if outcome == "stop":
        log.info("stopped")
    return outcome, exit_code
