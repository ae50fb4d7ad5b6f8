"""The per-camera analysis: motion gate → detector → tracker → zones, run on the
inference service's workers (`service.py`).

`app.py` hands each `CameraPipeline` a frame source (the capture's newest-frame box) and a
sink (the outbox); inference never imports capture. Every camera's analysis runs on the
`InferenceService` workers, so cameras share the cores instead of fighting over them.

Per frame the event loop is not in the way of the detector: a worker that finishes a frame
goes on with the camera's next frame if one is already waiting (up to `LANE_FRAMES`), and
the events of analysed frames are sunk by a task of their own while the next frame is
analysed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from edge_agent.config.cameras import CameraConfig
from edge_agent.contract import Kind
from edge_agent.errors import InferenceError
from edge_agent.health import ComponentHealth
from edge_agent.inference.analytics import TrafficAnalytics
from edge_agent.inference.classes import ClassFilter
from edge_agent.inference.detector import Detection
from edge_agent.inference.motion import MotionGate
from edge_agent.inference.plates import PlateReader
from edge_agent.inference.service import InferenceService
from edge_agent.inference.snapshots import SnapshotStore
from edge_agent.inference.tracker import Track, Tracker

__all__ = ["Analysis", "CameraPipeline", "FrameAnalyzer", "InferenceService"]

log = logging.getLogger(__name__)

SUMMARY_PERIOD_S = 5.0
LANE_FRAMES = 4
"""Frames a worker analyses for one camera before it lets the loop (and the next camera
in the queue) in: enough to keep the detector busy, few enough to stay fair."""
PENDING_RESULTS = 64
"""Analysed frames whose events wait for the sink before analysis waits too."""
STOP_WAIT_S = 10.0
Sink = Callable[[Kind, dict[str, Any], str, float], Awaitable[object]]
DetectFn = Callable[[np.ndarray], list[Detection]]


class FrameLike(Protocol):
    @property
    def image(self) -> np.ndarray: ...

    @property
    def ts(self) -> float: ...


FrameSource = Callable[[float], Awaitable[FrameLike | None]]
"""`await source(timeout_s)`: the next frame, or None when none came in time."""
FrameTake = Callable[[], FrameLike | None]
"""`take()`, from any thread: the frame waiting now, or None (no waiting)."""
Events = list[tuple[Kind, dict[str, Any]]]


@dataclass
class Analysis:
    """What one frame produced."""

    events: list[tuple[Kind, dict[str, Any]]] = field(default_factory=list)
    detected: bool = False
    gate_reason: str = ""
    detections: list[Detection] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)
    rule_events: int = 0


Analysed = list[tuple[float, Analysis | InferenceError]]
"""What a worker hands back: each frame's time and its analysis (or why it failed)."""

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
            result.detections = self.classes.apply(self.detect(image))
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


@dataclass(frozen=True)
class _Job:
    """The work a camera has on the inference workers: an analysis or a clock tick."""

    future: Future[Any]
    ts: float
    tick: bool = False


class CameraPipeline:
    """Takes each camera's newest frame, analyses it on an inference worker and sends the
    resulting events to the sink.

    `take` (optional) is the frame source's non-waiting side: with it, a worker goes on
    with a frame that is already waiting instead of handing back to the loop first.
    """

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
        take: FrameTake | None = None,
    ) -> None:
        self.config = config
        self.frames = frames
        self.take = take
        self.service = service
        self.sink = sink
        self.health = health
        self.snapshots = snapshots
        self.plate_snapshots = plate_snapshots
        self.name = f"camera:{config.name}"
        self.analyzer: FrameAnalyzer | None = None
        self._summary_at = 0.0
        self._pending: asyncio.Queue[tuple[float, Events]] = asyncio.Queue(PENDING_RESULTS)
        self._job: _Job | None = None

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
        job, self._job = self._job, None
        finished: list[tuple[float, Events]] = []
        if job is not None and not job.future.cancelled():
            # A job still running finishes first (the analyser is not ours to touch until
            # it has), and what it found is kept.
            try:
                async with asyncio.timeout(STOP_WAIT_S):
                    result = await asyncio.wrap_future(job.future)
            except TimeoutError:
                log.error("camera %s: analysis did not finish at shutdown", self.config.name)
                return
            finished = [(job.ts, result)] if job.tick else self._record(result)
        while not self._pending.empty():
            await self._send(*self._pending.get_nowait(), at_exit=True)
        for ts, events in finished:
            await self._send(ts, events, at_exit=True)
        now = time.time()
        await self._send(now, self.analyzer.finish(now), at_exit=True)

    async def run(self) -> None:
        if self.analyzer is None:
            raise RuntimeError("CameraPipeline.run() before __aenter__")
        async with asyncio.TaskGroup() as group:
            group.create_task(self._deliver())
            await self._analyse_forever(self.analyzer)

    async def _analyse_forever(self, analyzer: FrameAnalyzer) -> None:
        while True:
            frame = await self.frames(1.0)
            if frame is None:
                # No frame: bins still close on the clock, their coverage telling the gap.
                now = time.time()
                self._job = _Job(self.service.start(analyzer.tick, now), now, tick=True)
                events = await asyncio.wrap_future(self._job.future)
                self._job = None
                if events:
                    await self._pending.put((now, events))
                continue
            self._job = _Job(self.service.start(self._analyse_lane, analyzer, frame), frame.ts)
            results = await asyncio.wrap_future(self._job.future)
            self._job = None
            for ts, events in self._record(results):
                await self._pending.put((ts, events))

    def _analyse_lane(self, analyzer: FrameAnalyzer, frame: FrameLike) -> Analysed:
        """On a worker: this frame, then the frames already waiting, in order."""
        done: Analysed = []
        while True:
            try:
                done.append((frame.ts, analyzer.analyse(frame.image, frame.ts)))
            except InferenceError as exc:
                done.append((frame.ts, exc))
            if self.take is None or len(done) >= LANE_FRAMES:
                return done
            waiting = self.take()
            if waiting is None:
                return done
            frame = waiting

    def _record(self, results: Analysed) -> list[tuple[float, Events]]:
        """Health for the analysed frames; returns their events to send, in order."""
        events = []
        for ts, result in results:
            if isinstance(result, InferenceError):
                self.health.count("errors")
                self.health.set_facts(last_inference_error=str(result))
                log.warning("camera %s: analysis failed: %s", self.config.name, result)
                continue
            self.health.progress("frames_analysed")
            if result.detected:
                self.health.count("detector_runs")
            self.health.set_facts(
                tracks=sum(1 for t in result.tracks if t.confirmed),
                last_gate=result.gate_reason or "idle",
            )
            if (result.rule_events or ts - self._summary_at >= SUMMARY_PERIOD_S) and (
                self.analyzer is not None
            ):
                # Read between jobs: no worker touches this camera's analyser now.
                self._summary_at = ts
                self.health.set_facts(**self.analyzer.summary())
            if result.events:
                events.append((ts, result.events))
        return events

    async def _deliver(self) -> None:
        while True:
            ts, events = await self._pending.get()
            await self._send(ts, events)

    async def _send(self, ts: float, events: Events, *, at_exit: bool = False) -> None:
        for kind, data in events:
            if not at_exit:
                await self.sink(kind, data, self.config.name, ts)
                continue
            try:
                await self.sink(kind, data, self.config.name, ts)
            except Exception as exc:
                log.error("camera %s: events lost at shutdown: %s", self.config.name, exc)
                return
