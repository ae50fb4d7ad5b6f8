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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from edge_agent import __version__
from edge_agent.config import Settings, config_hash, effective_config
from edge_agent.config.editing import edit_config, restore_backup
from edge_agent.config.loader import redactor
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
from edge_agent.web.server import StatusServer

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
        return Applied(
            {"changed": sorted(changes), "config_hash": config_hash(settings), "restart": True},
            then=lambda: self.agent.request_restart(settings),
        )

    async def snapshot(self, camera: str) -> bytes:
        return await self.agent.camera_snapshot(camera)

    async def outbox_stats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.agent.outbox.stats)


class Agent:
    """One agent: its components in dependency order, and the health registry they report to."""

    def __init__(
        self, settings: Settings, *, config_path: Path | None = None, clock: Clock = time.time
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.clock = clock
        self.restart_to: Settings | None = None
        self.restart_requested = asyncio.Event()
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
        self.host = HostMonitor(state_dir, sink=self._host_health)
        self.components: list[Any] = [self.outbox, self.host]
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
                        f"sensor:{sensor.name}", kind="sensor", role=Role.SOURCE
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
                    f"camera:{camera.name}", kind="camera", role=Role.SOURCE
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
                    health=self.registry.register(f"analysis:{camera.name}", kind="analysis"),
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
                ),
                outbox=self.outbox,
                handlers=AgentCommands(self),
                health=self.registry.register("sync", kind="sync", role=Role.LINK),
                publisher_health=self.registry.register("publisher", kind="publisher"),
                state_dir=state_dir,
            )
            self.components.append(self.sync)
        if settings.web.enabled:
            self.web = StatusServer(
                settings.web, status=self.status, health=self.registry.register("web", kind="web")
            )
            self.components.append(self.web)

    def request_restart(self, settings: Settings) -> None:
        """Restart the components with `settings` (after a validated `config.set`)."""
        self.restart_to = settings
        self.restart_requested.set()

    async def _to_outbox(self, kind: Kind, data: dict[str, Any], stream: str, ts: float) -> None:
        if kind not in _PLAIN_KINDS:
            # State and alert texts may quote a URL from the config (an error message).
            data = self.redactor.data(data)
        await self.outbox.put(kind, data, stream=stream, ts=ts)

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
        """The facts the status page, `/api/status` and the `status` command show (secrets
        masked: a reason may quote a URL from the config)."""
        facts: dict[str, Any] = self.redactor.data(self._status())
        return facts

    def _status(self) -> dict[str, Any]:
        outbox_health = self.registry.get("outbox")
        verdict = self.registry.verdict()
        return {
            "node": {
                "id": self.settings.node.id,
                "district": self.settings.node.district,
                "province": self.settings.node.province,
            },
            "version": __version__,
            "config_hash": self.config_hash,
            "state": verdict.state.value,
            "verdict": verdict.state.value,
            "reasons": [finding.to_dict() for finding in verdict.findings],
            "time": time.time(),
            "started_at": self.registry.started_at,
            "components": self.registry.snapshot(),
            "outbox": outbox_health.snapshot()["facts"] if outbox_health else {},
            "host": dict(self.host.latest),
        }


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
    milliseconds and keeps every row) with the new settings; if they fail to start, the
    previous file and settings are restored and started again. `clock` stamps readings and
    drives the derived streams (tests inject one to fast-forward time)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    previous: Settings | None = None
    try:
        while True:
            agent = Agent(settings, config_path=config_path, clock=clock)
            outcome, exit_code = await _run_generation(agent, stop, trial=previous is not None)
            if outcome == "restart" and agent.restart_to is not None:
                log.info("configuration changed: restarting components")
                previous, settings = settings, agent.restart_to
                continue
            if outcome == "start_failed" and previous is not None and config_path is not None:
                log.error("new configuration failed to start; rolling back to the previous one")
                restore_backup(config_path)
                settings, previous = previous, None
                continue
            return exit_code
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _run_generation(agent: Agent, stop: asyncio.Event, *, trial: bool) -> tuple[str, int]:
    """Enter, run and close one set of components: ("stop" | "restart" | "start_failed", code)."""
    stack = contextlib.AsyncExitStack()
    exit_code = 0
    outcome = "stop"
    entering = True
    try:
        for component in agent.components:
            await stack.enter_async_context(_entered(component))
            if stop.is_set():
                raise _StopRequested
        entering = False
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
    except* _StopRequested:
        pass
    except* _RestartRequested:
        outcome = "restart"
    except* Exception as group:
        for exc in group.exceptions:
            if isinstance(exc, EdgeAgentError):
                log.error("fatal: %s", exc)
            else:
                log.error("fatal: %s", exc, exc_info=exc)
        # What stopped the start is the technician's to fix (config, files): 78 keeps systemd
        # from restarting into the same wall. Anything else a restart may cure: 1.
        exit_code = 78 if entering and all(_is_setup_error(e) for e in group.exceptions) else 1
        if entering and trial:
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
