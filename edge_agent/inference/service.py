"""The inference service: the detector, loaded once, and the threads every camera's
analysis runs on.

All cameras share one onnxruntime session. Two kinds of threads:

* model threads (`workers`) do nothing but model runs. One camera gets one, whose runs use
  `intra_op_threads` threads; several cameras get up to `intra_op_threads`, whose runs use
  one thread each (`detector.workers = "auto"`). On a small CPU that is more frames per
  second for the same threads: a run on one thread never waits at the end of a layer for a
  sibling thread that the scheduler gave to a capture thread.
* analysis threads (as many as cameras, at most two per model thread) do the rest: the
  motion gate, letterboxing, output decoding, NMS, tracking, analytics. They run at
  `ANALYSIS_NICE` among the agent's threads, so they fill the gaps the model leaves instead
  of delaying its runs; and a camera's next frame is prepared while the model runs this
  one (see `CameraPipeline`).

Each camera has at most one job on the analysis threads at a time, so its frames are
analysed in order and its analyser is only ever touched by one thread at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from edge_agent.config.cameras import DetectorConfig
from edge_agent.errors import InferenceError
from edge_agent.health import ComponentHealth, State, reason
from edge_agent.inference.detector import Detector
from edge_agent.inference.plates import PlateReader

log = logging.getLogger(__name__)

T = TypeVar("T")
PROBE_PERIOD_S = 5.0
HUNG_AFTER_S = 30.0
ANALYSIS_NICE = 19
"""Added to the analysis threads' niceness. They cannot be starved by the model threads,
whose work is only what they prepared; at 19 they still get their share against other
processes (unlike SCHED_IDLE), so the service's probe never waits on them for long."""


def plan_threads(config: DetectorConfig, cameras: int) -> tuple[int, int]:
    """(worker threads, onnxruntime threads per model run) for `cameras` cameras."""
    if config.workers == "auto":
        workers = max(1, min(cameras, config.intra_op_threads))
        return workers, max(1, config.intra_op_threads // workers)
    return config.workers, config.intra_op_threads


class InferenceService:
    """Owns the detector and the worker threads every camera's analysis runs on.

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
        cameras: int = 1,
    ):
        self.config = config
        self.model_dir = model_dir
        self.health = health
        self.floors = floors
        self.want_plates = plates
        self.workers, self.run_threads = plan_threads(config, cameras)
        self.analysts = max(1, min(cameras, 2 * self.workers))
        self.detector: Detector | None = None
        self.plates: PlateReader | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._models: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> InferenceService:
        self._models = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="model")
        self._executor = ThreadPoolExecutor(
            max_workers=self.analysts,
            thread_name_prefix="inference",
            initializer=_lower_priority,
            initargs=(ANALYSIS_NICE,),
        )
        self.health.set_facts(
            workers=self.workers, threads_per_run=self.run_threads, analysis_threads=self.analysts
        )
        loop = asyncio.get_running_loop()
        try:
            # Built on a model thread: onnxruntime's own threads inherit its priority.
            self.detector = await loop.run_in_executor(
                self._models,
                lambda: Detector.from_config(
                    self.config, model_dir=self.model_dir, intra_op_threads=self.run_threads
                ),
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
        for pool in (self._executor, self._models):
            if pool is not None:
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        self.health.set_state(State.STOPPED)

    async def run(self) -> None:
        # A wedged inference thread must stop the watchdog even while the capture threads
        # (which share the cameras' health) keep beating: prove the workers still turn.
        while True:
            try:
                async with asyncio.timeout(HUNG_AFTER_S):
                    await self.submit(time.monotonic)
                    if self._models is not None:
                        await asyncio.wrap_future(self._models.submit(time.monotonic))
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

    def start(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn` for a worker thread; the caller awaits it with `asyncio.wrap_future`
        and may wait for it again after a cancellation (it keeps running)."""
        if self._executor is None:
            raise InferenceError("the inference service is not running")
        return self._executor.submit(fn, *args, **kwargs)

    async def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.wrap_future(self.start(fn, *args, **kwargs))

    def run_model(self, tensor: Any) -> Future[list[Any]]:
        """Queue one model run for a model thread (from an analysis thread)."""
        if self._models is None or self.detector is None:
            raise InferenceError("the inference service has no model running")
        return self._models.submit(self.detector.run_raw, tensor)


def _lower_priority(nice: int) -> None:
    # On Linux the nice value belongs to the thread (setpriority(2)): only this one.
    thread = threading.get_native_id()
    try:
        os.setpriority(
            os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice)
        )
    except OSError as exc:
        log.warning("analysis threads keep their priority: %s", exc)
