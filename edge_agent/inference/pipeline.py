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
from collections.abc import Awaitable, Callable, Mapping
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
from edge_agent.inference.analytics import TrafficAnalytics
from edge_agent.inference.classes import ClassFilter
from edge_agent.inference.detector import Detection, Detector
from edge_agent.inference.motion import MotionGate
from edge_agent.inference.plates import PlateReader
from edge_agent.inference.snapshots import SnapshotStore
from edge_agent.inference.tracker import Track, Tracker

log = logging.getLogger(__name__)

T = TypeVar("T")
PROBE_PERIOD_S = 5.0
HUNG_AFTER_S = 30.0
SUMMARY_PERIOD_S = 5.0
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
    rule_events: int = 0


RULE_KINDS = frozenset({Kind.DWELL, Kind.STOPPED, Kind.WRONG_WAY, Kind.CROWD, Kind.PLATE})


class FrameAnalyzer:
    """Gate, detector, classes, tracker and traffic analytics of one camera; synchronous,
    one frame at a time."""

    def __init__(
        self,
        config: CameraConfig,
        detect: DetectFn | None,
        *,
        snapshots: SnapshotStore | None = None,
        plate_snapshots: SnapshotStore | None = None,
        plates: PlateReader | None = None,
        gate: bool | None = None,
    ) -> None:
        self.config = config
        self.detect = detect
        motion = (
            config.motion if gate is None else config.motion.model_copy(update={"enabled": gate})
        )
        self.gate = MotionGate(motion)
        self.classes = ClassFilter.from_config(config)
        # Tracks survive a few analysis periods unseen, never less than two seconds.
        self.tracker = Tracker(max_age_s=max(2.0, 3.0 / config.fps))
        self.analytics = TrafficAnalytics(config)
        self.snapshots = snapshots
        self.plate_snapshots = plate_snapshots
        self.plates = plates if config.plates.enabled else None
        self.detector_runs = 0
        self.frames = 0

    def analyse(self, image: np.ndarray, ts: float) -> Analysis:
        self.frames += 1
        result = Analysis()
        if self.detect is None:
            # No detector, nothing seen: the bins still close, with the time uncovered,
            # so zero counts never claim an empty street.
            result.events = self.analytics.tick(ts)
            return result
        decision = self.gate.decide(image, ts)
        result.gate_reason = decision.reason
        if decision.run:
            self.detector_runs += 1
            result.detected = True
            started = time.perf_counter()
            result.detections = self.classes.apply(self.detect(image))
            result.detect_s = time.perf_counter() - started
            result.tracks = self.tracker.update(result.detections, ts)
        else:
            result.tracks = self.tracker.keep_alive(ts)
        height, width = image.shape[:2]
        step = self.analytics.update(result.tracks, ts, width, height)
        result.events = step.events
        for track, line in step.plate_reads:
            result.events += self._read_plate(image, track, line, ts, width, height)
        for kind, data in result.events:
            if kind is Kind.DETECTION or kind in RULE_KINDS:
                self._snapshot(image, kind, data, ts)
            if kind in RULE_KINDS:
                result.rule_events += 1
                self.analytics.note_rule_event(kind, data, ts)
        return result

    def _read_plate(
        self, image: np.ndarray, track: Track, line: str, ts: float, width: int, height: int
    ) -> list[tuple[Kind, dict[str, Any]]]:
        if self.plates is None:
            return []
        plate = self.plates.read_vehicle(image, track.box, lower_part=self.config.plates.lower_part)
        if plate is None or plate.confidence < self.config.plates.min_confidence:
            return []
        x1, y1, x2, y2 = track.box
        return [
            (
                Kind.PLATE,
                {
                    "camera": self.config.name,
                    "line": line,
                    "track_id": track.id,
                    "label": track.label,
                    "text": plate.text,
                    "confidence": round(plate.confidence, 4),
                    "box": [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)],
                    "plate_box": [round(v, 1) for v in plate.box],
                    "frame_size": [width, height],
                },
            )
        ]

    def _snapshot(self, image: np.ndarray, kind: Kind, data: dict[str, Any], ts: float) -> None:
        store = self.plate_snapshots if kind is Kind.PLATE else self.snapshots
        if store is None:
            return
        subject = data.get("track_id", data.get("zone", ""))
        place = data.get("zone") or data.get("line") or ""
        # Detection snapshots keep their old names; rule events say their kind.
        what = "" if kind is Kind.DETECTION else f"{kind.value}-"
        path = store.save(image, f"{int(ts * 1000)}-{what}{subject}-{place}")
        if path is not None:
            data["snapshot"] = path.name

    def tick(self, now: float) -> list[tuple[Kind, dict[str, Any]]]:
        """Bins that ended while no frame came (an outage): published on the clock."""
        return self.analytics.tick(now)

    def finish(self, ts: float) -> list[tuple[Kind, dict[str, Any]]]:
        """The counts of the unfinished bin, at shutdown."""
        return self.analytics.finish(ts)

    def summary(self) -> dict[str, Any]:
        """Facts for the status page: today's counts and the last rule events."""
        a = self.analytics
        return {
            "today_date": a.today_date,
            "today": {m: dict(c) for m, c in a.today.items()},
            "today_lines": {
                line: {d: dict(c) for d, c in per_dir.items()}
                for line, per_dir in a.today_lines.items()
            },
            "last_rule_events": list(a.last_rule_events),
        }


class InferenceService:
    """Owns the detector and the one thread every camera's analysis runs on.

    A model that will not load leaves the agent running: the service reports `failing`
    and cameras keep capturing (and reporting their state) without detections.
    """

    name = "inference"

    def __init__(
        self,
        config: DetectorConfig,
        *,
        model_dir: Path,
        health: ComponentHealth,
        floors: Callable[[list[str]], Mapping[str, float]] | None = None,
        plates: bool = False,
    ):
        self.config = config
        self.model_dir = model_dir
        self.health = health
        self.floors = floors
        self.want_plates = plates
        self.detector: Detector | None = None
        self.plates: PlateReader | None = None
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
            if self.floors is not None:
                self.detector.lower_thresholds(self.floors(self.detector.labels))
            self.health.set_state(State.OK)
            self.health.set_facts(model=self.detector.model_path.name)
        if self.want_plates:
            try:
                self.plates = await self.submit(PlateReader, self.model_dir / "ocr")
            except InferenceError as exc:
                # Counting goes on; only the plates are missing, and the page says so.
                log.error("plate reader unavailable: %s", exc)
                self.health.set_facts(plates=f"unavailable: {exc}")
            else:
                self.health.set_facts(plates="ready")
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
        plate_snapshots: SnapshotStore | None = None,
    ) -> None:
        self.config = config
        self.frames = frames
        self.service = service
        self.sink = sink
        self.health = health
        self.snapshots = snapshots
        self.plate_snapshots = plate_snapshots
        self.name = f"camera:{config.name}"
        self.analyzer: FrameAnalyzer | None = None
        self._summary_at = 0.0
        self._latency_counts = [0] * (len(DETECT_LATENCY_BOUNDS_S) + 1)
        self._latency_sum = 0.0

    async def __aenter__(self) -> CameraPipeline:
        detector = self.service.detector
        self.analyzer = FrameAnalyzer(
            self.config,
            detector.detect if detector is not None else None,
            snapshots=self.snapshots,
            plate_snapshots=self.plate_snapshots,
            plates=self.service.plates,
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
                # No frame: bins still close on the clock, their coverage telling the gap.
                now = time.time()
                for kind, data in await self.service.submit(analyzer.tick, now):
                    await self.sink(kind, data, self.config.name, now)
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
            if result.rule_events or frame.ts - self._summary_at >= SUMMARY_PERIOD_S:
                self._summary_at = frame.ts
                self.health.set_facts(**analyzer.summary())
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
