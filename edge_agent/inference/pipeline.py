"""The per-camera analysis: motion gate → detector → tracker → zones, and the shared
inference thread it runs on.

`app.py` hands each `CameraPipeline` a frame source (the capture's newest-frame box) and a
sink (the outbox); inference never imports capture. Every camera's analysis runs on one
`InferenceService` thread, so cameras share the cores instead of fighting over them.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import numpy as np

from edge_agent.config.cameras import CameraConfig, DetectorConfig
from edge_agent.contract import Kind
from edge_agent.errors import InferenceError
from edge_agent.health import ComponentHealth, State, reason
from edge_agent.inference.detector import Detection, Detector
from edge_agent.inference.motion import MotionGate
from edge_agent.inference.snapshots import SnapshotStore
from edge_agent.inference.tracker import Track, Tracker
from edge_agent.inference.zones import ZoneAnalytics

log = logging.getLogger(__name__)

T = TypeVar("T")
PROBE_PERIOD_S = 5.0
HUNG_AFTER_S = 30.0
Sink = Callable[[Kind, dict[str, Any], str, float], Awaitable[object]]
DetectFn = Callable[[np.ndarray], list[Detection]]
# Buckets of the detector latency histogram the status page's /metrics exports.
DETECT_LATENCY_BOUNDS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FrameLike(Protocol):
    @property
    def image(self) -> np.ndarray: ...

    @property
    def ts(self) -> float: ...


FrameSource = Callable[[float], Awaitable[FrameLike | None]]
"""`await source(timeout_s)`: the next frame, or None when none came in time."""


@dataclass
class Analysis:
    """What one frame produced."""

    events: list[tuple[Kind, dict[str, Any]]] = field(default_factory=list)
    detected: bool = False
    detect_s: float = 0.0
    gate_reason: str = ""
    detections: list[Detection] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)


class FrameAnalyzer:
    """Gate, detector, tracker and zones of one camera; synchronous, one frame at a time."""

    def __init__(
        self,
        config: CameraConfig,
        detect: DetectFn | None,
        *,
        snapshots: SnapshotStore | None = None,
        gate: bool | None = None,
    ) -> None:
        self.config = config
        self.detect = detect
        motion = (
            config.motion if gate is None else config.motion.model_copy(update={"enabled": gate})
        )
        self.gate = MotionGate(motion)
        # Tracks survive a few analysis periods unseen, never less than two seconds.
        self.tracker = Tracker(max_age_s=max(2.0, 3.0 / config.fps))
        self.zones = ZoneAnalytics(config)
        self.snapshots = snapshots
        self.detector_runs = 0
        self.frames = 0

    def analyse(self, image: np.ndarray, ts: float) -> Analysis:
        self.frames += 1
        result = Analysis()
        if self.detect is None:
            # No detector, nothing to count: zero counts would claim an empty street.
            return result
        decision = self.gate.decide(image, ts)
        result.gate_reason = decision.reason
        if decision.run and self.detect is not None:
            self.detector_runs += 1
            result.detected = True
            started = time.perf_counter()
            result.detections = self.detect(image)
            result.detect_s = time.perf_counter() - started
            result.tracks = self.tracker.update(result.detections, ts)
        height, width = image.shape[:2]
        result.events = self.zones.update(result.tracks, ts, width, height)
        if self.snapshots is not None:
            for kind, data in result.events:
                if kind is Kind.DETECTION:
                    name = f"{int(ts * 1000)}-{data['track_id']}-{data['zone']}"
                    path = self.snapshots.save(image, name)
                    if path is not None:
                        data["snapshot"] = path.name
        return result

    def finish(self, ts: float) -> list[tuple[Kind, dict[str, Any]]]:
        """The counts of the unfinished interval, at shutdown."""
        return self.zones.flush(ts, force=True)


class InferenceService:
    """Owns the detector and the one thread every camera's analysis runs on.

    A model that will not load leaves the agent running: the service reports `failing`
    and cameras keep capturing (and reporting their state) without detections.
    """

    name = "inference"

    def __init__(self, config: DetectorConfig, *, model_dir: Path, health: ComponentHealth):
        self.config = config
        self.model_dir = model_dir
        self.health = health
        self.detector: Detector | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> InferenceService:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        try:
            self.detector = await self.submit(
                Detector.from_config, self.config, model_dir=self.model_dir
            )
        except InferenceError as exc:
            log.error("detector unavailable, cameras run without detection: %s", exc)
            self.health.set_state(
                State.FAILING,
                reason("model_unavailable", f"detection model unavailable: {exc}"),
                error=str(exc),
            )
        else:
            self.health.set_state(State.OK)
            self.health.set_facts(model=self.detector.model_path.name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self.health.set_state(State.STOPPED)

    async def run(self) -> None:
        # A wedged inference thread must stop the watchdog even while the capture threads
        # (which share the cameras' health) keep beating: prove the thread still turns.
        while True:
            try:
                async with asyncio.timeout(HUNG_AFTER_S):
                    await self.submit(time.monotonic)
            except TimeoutError:
                why = reason(
                    "inference_stuck",
                    f"inference thread stuck for over {HUNG_AFTER_S:g} s",
                    seconds=HUNG_AFTER_S,
                )
                if self.health.set_state(State.FAILING, why, error=why.text):
                    log.error("%s; the watchdog will restart the agent", why.text)
                continue
            if self.detector is not None and self.health.set_state(State.OK):
                log.info("inference thread running again")
            self.health.beat(PROBE_PERIOD_S + HUNG_AFTER_S)
            await asyncio.sleep(PROBE_PERIOD_S)

    async def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            raise InferenceError("the inference service is not running")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))


class CameraPipeline:
    """Takes each camera's newest frame, analyses it on the inference thread and sends
    the resulting events to the sink."""

    def __init__(
        self,
        config: CameraConfig,
        *,
        frames: FrameSource,
        service: InferenceService,
        sink: Sink,
        health: ComponentHealth,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self.config = config
        self.frames = frames
        self.service = service
        self.sink = sink
        self.health = health
        self.snapshots = snapshots
        self.name = f"camera:{config.name}"
        self.analyzer: FrameAnalyzer | None = None
        self._latency_counts = [0] * (len(DETECT_LATENCY_BOUNDS_S) + 1)
        self._latency_sum = 0.0

    async def __aenter__(self) -> CameraPipeline:
        detector = self.service.detector
        self.analyzer = FrameAnalyzer(
            self.config,
            detector.detect if detector is not None else None,
            snapshots=self.snapshots,
        )
        self.health.set_facts(detector="ready" if detector is not None else "unavailable")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.analyzer is None:
            return
        for kind, data in self.analyzer.finish(time.time()):
            try:
                await self.sink(kind, data, self.config.name, time.time())
            except Exception as exc:
                log.error("camera %s: final counts lost: %s", self.config.name, exc)

    async def run(self) -> None:
        analyzer = self.analyzer
        if analyzer is None:
            raise RuntimeError("CameraPipeline.run() before __aenter__")
        while True:
            frame = await self.frames(1.0)
            if frame is None:
                continue
            try:
                result = await self.service.submit(analyzer.analyse, frame.image, frame.ts)
            except InferenceError as exc:
                self.health.count("errors")
                self.health.set_facts(last_inference_error=str(exc))
                log.warning("camera %s: analysis failed: %s", self.config.name, exc)
                continue
            self.health.progress("frames_analysed")
            if self.health.state is not State.OK and self.health.set_state(State.OK):
                log.info("camera %s: analysing frames", self.config.name)
            if result.detected:
                self.health.count("detector_runs")
                self._observe_latency(result.detect_s)
            self.health.set_facts(
                tracks=sum(1 for t in result.tracks if t.confirmed),
                last_gate=result.gate_reason or "idle",
            )
            for kind, data in result.events:
                await self.sink(kind, data, self.config.name, frame.ts)

    def _observe_latency(self, seconds: float) -> None:
        self._latency_counts[bisect.bisect_left(DETECT_LATENCY_BOUNDS_S, seconds)] += 1
        self._latency_sum += seconds
        self.health.set_facts(
            detect_latency_s={
                "bounds": DETECT_LATENCY_BOUNDS_S,
                "counts": tuple(self._latency_counts),
                "sum": self._latency_sum,
            }
        )
