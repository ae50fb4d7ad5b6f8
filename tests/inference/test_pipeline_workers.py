"""The camera pipeline on the inference workers: frames already waiting are analysed by
the worker without a trip through the event loop, in order; several cameras run on several
workers with the results one worker would give; and a frame still in analysis at shutdown
keeps its events."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.config import CameraConfig, DetectorConfig
from edge_agent.contract import Kind
from edge_agent.health import ComponentHealth
from edge_agent.inference.detector import Detector
from edge_agent.inference.pipeline import CameraPipeline, FrameAnalyzer, InferenceService
from edge_agent.inference.service import plan_threads
from edge_agent.inference.snapshots import SnapshotStore

# Recent frames: a clock tick while no frame comes closes only the bins since then.
START = time.time() - 60


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    ts: float


class Frames:
    """A frame source over a list: `get` for the loop, `take` for a worker; `take` notes
    which thread called it. `done` is set when the loop asks again after the last frame,
    which it does only once every frame it had was analysed and recorded."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = list(frames)
        self.lock = threading.Lock()
        self.taken_by: list[str] = []
        self.done = asyncio.Event()

    def take(self) -> Frame | None:
        with self.lock:
            self.taken_by.append(threading.current_thread().name)
            return self.frames.pop(0) if self.frames else None

    async def get(self, timeout: float) -> Frame | None:
        with self.lock:
            if self.frames:
                return self.frames.pop(0)
        self.done.set()
        await asyncio.sleep(min(timeout, 0.01))
        return None


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[Kind, dict[str, Any], float]] = []

    async def __call__(self, kind: Kind, data: dict[str, Any], stream: str, ts: float) -> None:
        self.events.append((kind, data, ts))


def street(media_dir: Path, count: int, *, offset: int = 0) -> list[Frame]:
    """Every other frame of vtest.avi (10 fps) from `offset`: people walking, at 5 fps."""
    capture = cv2.VideoCapture(str(media_dir / "vtest.avi"))
    frames: list[Frame] = []
    index = 0
    while len(frames) < count:
        ok, image = capture.read()
        assert ok
        if index >= offset and index % 2 == 0:
            frames.append(Frame(image, START + len(frames) * 0.2))
        index += 1
    capture.release()
    return frames


def camera(name: str) -> CameraConfig:
    return CameraConfig(name=name, source="x", fps=5, motion={"enabled": False})


async def analyse(
    service: InferenceService, config: CameraConfig, frames: Frames
) -> tuple[Sink, ComponentHealth]:
    sink, health = Sink(), ComponentHealth(f"analysis:{config.name}")
    pipeline = CameraPipeline(
        config, frames=frames.get, take=frames.take, service=service, sink=sink, health=health
    )
    async with pipeline:
        task = asyncio.create_task(pipeline.run())
        await asyncio.wait_for(frames.done.wait(), timeout=120)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return sink, health


def serial(detector: Detector, config: CameraConfig, frames: list[Frame]) -> list[Any]:
    analyzer = FrameAnalyzer(config, detector.detect)
    events: list[Any] = []
    for frame in frames:
        events += [(k, d, frame.ts) for k, d in analyzer.analyse(frame.image, frame.ts).events]
    events += [(k, d, frames[-1].ts) for k, d in analyzer.finish(frames[-1].ts)]
    return events


def test_auto_plan_gives_one_run_per_camera_up_to_the_threads() -> None:
    auto = DetectorConfig()
    assert plan_threads(auto, 1) == (1, 2)
    assert plan_threads(auto, 2) == (2, 1)
    assert plan_threads(auto, 8) == (2, 1)
    assert plan_threads(DetectorConfig(intra_op_threads=4), 3) == (3, 1)
    assert plan_threads(DetectorConfig(workers=1), 8) == (1, 2)
    assert plan_threads(DetectorConfig(workers=3, intra_op_threads=1), 1) == (3, 1)


@pytest.mark.asyncio
async def test_waiting_frames_are_analysed_on_the_worker_in_order(
    model_dir: Path, media_dir: Path
) -> None:
    frames = street(media_dir, 12)
    source = Frames(frames)
    service = InferenceService(
        DetectorConfig(), model_dir=model_dir, health=ComponentHealth("inference")
    )
    async with service:
        assert service.detector is not None
        expected = serial(service.detector, camera("one"), frames)
        sink, health = await analyse(service, camera("one"), source)
    # The worker went on with frames that were waiting, without the loop in between.
    assert any(name.startswith("inference") for name in source.taken_by)
    assert health.counters["frames_analysed"] == len(frames)
    assert health.counters["detector_runs"] == len(frames)
    got = [(k, d, ts) for k, d, ts in sink.events if k is not Kind.COUNT]
    assert got == [(k, d, ts) for k, d, ts in expected if k is not Kind.COUNT]
    assert any(k is Kind.DETECTION for k, _, _ in got)


@pytest.mark.asyncio
async def test_two_cameras_on_two_workers_give_what_one_thread_gives(
    model_dir: Path, media_dir: Path
) -> None:
    clips = {"east": street(media_dir, 10), "west": street(media_dir, 10, offset=300)}
    service = InferenceService(
        DetectorConfig(), model_dir=model_dir, health=ComponentHealth("inference"), cameras=2
    )
    async with service:
        assert (service.workers, service.run_threads) == (2, 1)
        assert service.detector is not None
        expected = {n: serial(service.detector, camera(n), f) for n, f in clips.items()}
        results = await asyncio.gather(
            *(analyse(service, camera(n), Frames(f)) for n, f in clips.items())
        )
    for name, (sink, _) in zip(clips, results, strict=True):
        got = [e for e in sink.events if e[0] is not Kind.COUNT]
        assert got == [e for e in expected[name] if e[0] is not Kind.COUNT], name
        assert got, name


class HeldSnapshots(SnapshotStore):
    """A real snapshot store whose first save waits to be released: it holds the frame
    whose detection events it belongs to in analysis."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, max_count=10, max_bytes=10_000_000)
        self.started = threading.Event()
        self.release = threading.Event()

    def save(self, image: np.ndarray, name: str) -> Path | None:
        if not self.started.is_set():
            self.started.set()
            self.release.wait(30)
        return super().save(image, name)


def without_snapshots(events: list[Any]) -> list[Any]:
    return [(k, {n: v for n, v in d.items() if n != "snapshot"}, ts) for k, d, ts in events]


@pytest.mark.asyncio
async def test_a_frame_in_analysis_at_shutdown_keeps_its_events(
    model_dir: Path, media_dir: Path, tmp_path: Path
) -> None:
    # Two frames: the second confirms the tracks, which makes the detection events.
    frames = street(media_dir, 2)
    service = InferenceService(
        DetectorConfig(), model_dir=model_dir, health=ComponentHealth("inference")
    )
    sink, config = Sink(), camera("door")
    snapshots = HeldSnapshots(tmp_path / "snapshots")
    async with service:
        assert service.detector is not None
        expected = serial(service.detector, config, frames)
        source = Frames(frames)
        pipeline = CameraPipeline(
            config,
            frames=source.get,
            service=service,
            sink=sink,
            health=ComponentHealth("analysis:door"),
            snapshots=snapshots,
        )
        await pipeline.__aenter__()
        task = asyncio.create_task(pipeline.run())
        assert await asyncio.to_thread(snapshots.started.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Released only once the pipeline is closing, with the second frame in analysis.
        asyncio.get_running_loop().call_soon(snapshots.release.set)
        await pipeline.__aexit__(None, None, None)
    detections = [e for e in sink.events if e[0] is Kind.DETECTION]
    assert detections
    assert without_snapshots(detections) == [e for e in expected if e[0] is Kind.DETECTION]
    assert {d["snapshot"] for _, d, _ in detections} == {p.name for p in snapshots.files()}
    # The final counts come last, after the events of the frame that was in analysis.
    assert sink.events[-1][0] is Kind.COUNT
