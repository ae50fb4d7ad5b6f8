"""The per-camera pipeline: frames from the capture, analysed (`analyzer.py`) on the
inference service's threads (`service.py`), events to the sink.

`app.py` hands each `CameraPipeline` a frame source (the capture's newest-frame box) and a
sink (the outbox); inference never imports capture. Every camera's analysis runs on the
`InferenceService` threads, so cameras share the cores instead of fighting over them.

Per frame the event loop is not in the way of the detector: an analysis thread that has a
frame goes on with the camera's next frame if one is already waiting (up to `LANE_FRAMES`),
preparing it while the model runs the current one; and the events of analysed frames are
sunk by a task of their own while the next frames are analysed.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from edge_agent.config.cameras import CameraConfig
from edge_agent.contract import Kind
from edge_agent.errors import InferenceError
from edge_agent.health import ComponentHealth, State
from edge_agent.inference.analyzer import Analysis, FrameAnalyzer, Step
from edge_agent.inference.detector import Prepared
from edge_agent.inference.service import InferenceService
from edge_agent.inference.snapshots import SnapshotStore

__all__ = ["Analysis", "CameraPipeline", "FrameAnalyzer", "InferenceService"]

log = logging.getLogger(__name__)

SUMMARY_PERIOD_S = 5.0
LANE_FRAMES = 8
"""Frames an analysis thread takes for one camera before it lets the loop (and the next
camera in the queue) in: enough to keep the model busy, few enough to stay fair."""
PENDING_RESULTS = 64
"""Analysed frames whose events wait for the sink before analysis waits too."""
STOP_WAIT_S = 10.0
# Buckets of the detector latency histogram the status page's /metrics exports: from a
# frame's preparation for the model to its decoded detections.
DETECT_LATENCY_BOUNDS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
Sink = Callable[[Kind, dict[str, Any], str, float], Awaitable[object]]


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


Analysed = list[tuple[float, Analysis | InferenceError]]
"""What a lane hands back: each frame's time and its analysis (or why it failed)."""


@dataclass(frozen=True)
class _InFlight:
    """A frame between `FrameAnalyzer.begin` and `complete`, its model run maybe queued."""

    step: Step | None
    prepared: Prepared | None
    run: Future[list[np.ndarray]] | None
    failed: tuple[float, InferenceError] | None = None
    started: float = 0.0


@dataclass(frozen=True)
class _Job:
    """The work a camera has on the analysis threads: frames to analyse or a clock tick."""

    future: Future[Any]
    ts: float
    tick: bool = False


class CameraPipeline:
    """Takes each camera's newest frame, analyses it on the inference service's threads
    and sends the resulting events to the sink.

    `take` (optional) is the frame source's non-waiting side: with it, an analysis thread
    goes on with a frame that is already waiting instead of handing back to the loop first.
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
        self._latency_counts = [0] * (len(DETECT_LATENCY_BOUNDS_S) + 1)
        self._latency_sum = 0.0
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
        """On an analysis thread: this frame, then the frames already waiting, in order.

        The model runs on a model thread; meanwhile this thread begins the next frame (gate,
        letterbox into the other input tensor) and completes the one before (outputs, NMS,
        tracking, analytics). So the model thread goes from run to run, and the rest is
        done beside it."""
        done: Analysed = []
        in_flight = deque([self._begin(analyzer, frame, buffer=0)])
        taken = 1
        while in_flight:
            if self.take is not None and taken < LANE_FRAMES and len(in_flight) < 2:
                waiting = self.take()
                if waiting is not None:
                    # Begun before waiting for the model: its run queues behind this one,
                    # in the other input tensor (the one before it is complete).
                    in_flight.append(self._begin(analyzer, waiting, buffer=taken % 2))
                    taken += 1
            done.append(self._complete(analyzer, in_flight.popleft()))
        return done

    def _begin(self, analyzer: FrameAnalyzer, frame: FrameLike, *, buffer: int) -> _InFlight:
        try:
            step = analyzer.begin(frame.image, frame.ts)
            detector = self.service.detector
            if not step.detect or detector is None:
                return _InFlight(step, None, None)
            started = time.perf_counter()
            prepared = detector.prepare(frame.image, buffer=buffer)
            run = self.service.run_model(prepared.tensor)
            return _InFlight(step, prepared, run, started=started)
        except InferenceError as exc:
            return _InFlight(None, None, None, failed=(frame.ts, exc))

    def _complete(
        self, analyzer: FrameAnalyzer, job: _InFlight
    ) -> tuple[float, Analysis | InferenceError]:
        if job.failed is not None:
            return job.failed
        assert job.step is not None
        try:
            detections = None
            took = 0.0
            if job.run is not None and job.prepared is not None:
                detector = self.service.detector
                assert detector is not None
                detections = detector.finish(job.run.result(), job.prepared)
                took = time.perf_counter() - job.started
            analysis = analyzer.complete(job.step, detections)
            analysis.detect_s = took
            return job.step.ts, analysis
        except InferenceError as exc:
            return job.step.ts, exc

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
            # ok from the first analysed frame: it stayed `starting`, and every node with a
            # camera looked degraded for good.
            if self.health.state is not State.OK and self.health.set_state(State.OK):
                log.info("camera %s: analysing frames", self.config.name)
            if result.detected:
                self.health.count("detector_runs")
                self._observe_latency(result.detect_s)
            self.health.set_facts(
                tracks=sum(1 for t in result.tracks if t.confirmed),
                last_gate=result.gate_reason or "idle",
            )
            if (result.rule_events or ts - self._summary_at >= SUMMARY_PERIOD_S) and (
                self.analyzer is not None
            ):
                # Read between jobs: no thread touches this camera's analyser now.
                self._summary_at = ts
                self.health.set_facts(**self.analyzer.summary())
            if result.events:
                events.append((ts, result.events))
        return events

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
