"""Camera capture: one thread per camera reading RTSP, a V4L2 device or a video file.

OpenCV's readers never drop frames on their own: a consumer slower than the source falls
seconds behind. So the capture thread grabs every frame, decodes into BGR only those due
at the target analysis rate, and hands them over in a one-slot box where the newest frame
wins and every overwritten frame is counted. The thread also owns reconnection (capped,
jittered backoff) and the camera's online/offline state; each change becomes a `camera`
event, and the time between going offline and coming back becomes a coverage-gap record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from edge_agent.backoff import Backoff
from edge_agent.config.cameras import CameraConfig
from edge_agent.contract import Kind, utc_iso
from edge_agent.errors import CameraError
from edge_agent.health import ComponentHealth, State, reason
from edge_agent.redact import redact_url
from edge_agent.sensors.base import Sink

log = logging.getLogger(__name__)

# OpenCV's FFmpeg backend takes its demuxer options from one process-wide variable.
_FFMPEG_OPTIONS_LOCK = threading.Lock()
JOIN_TIMEOUT_S = 3.0
SOLE_CAMERA_NICE = 19
_DEVICE = re.compile(r"^/dev/video(\d+)$")


def redact(source: str) -> str:
    """The source with its userinfo and secret query parameters masked, for logs and events."""
    return redact_url(source)


@dataclass(frozen=True)
class Frame:
    """One decoded frame: BGR pixels and the wall-clock time it was captured."""

    image: np.ndarray
    ts: float
    index: int


class FrameSlot:
    """A one-frame box between a thread and the event loop: the newest frame wins."""

    def __init__(self, *, lossless: bool = False) -> None:
        self._frame: Frame | None = None
        self._cond = threading.Condition()
        self._lossless = lossless
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self.dropped = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready = asyncio.Event()

    def put(self, frame: Frame) -> bool:
        """Store the frame; returns False when it replaced one nobody took (a drop).

        In lossless mode (offline analysis of a file) the caller waits for room instead.
        """
        with self._cond:
            if self._lossless:
                while self._frame is not None and not self._closed:
                    self._cond.wait(0.5)
            replaced = self._frame is not None
            if replaced:
                self.dropped += 1
            self._frame = frame
        if self._loop is not None and self._ready is not None:
            # The loop may have closed while we were shutting down.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._ready.set)
        return not replaced

    def take(self) -> Frame | None:
        with self._cond:
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    async def get(self, timeout: float) -> Frame | None:
        """The next frame, or None when none arrives within `timeout` seconds."""
        if self._ready is None:
            raise RuntimeError("FrameSlot.bind() was not called")
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._ready.clear()
                    frame = self.take()
                    if frame is not None:
                        return frame
                    await self._ready.wait()
        except TimeoutError:
            return None


def open_source(config: CameraConfig) -> Any:
    """Open the camera's source with OpenCV; raises `CameraError` saying why not."""
    source = config.source
    open_ms = int(config.open_timeout_s * 1000)
    read_ms = int(config.read_timeout_s * 1000)
    # One decoding thread: it costs less CPU in all than FFmpeg's frame threads, and the
    # other cores belong to the detector.
    timeouts = [
        *(cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms),
        *(cv2.CAP_PROP_N_THREADS, 1),
    ]
    if source.startswith(("rtsp://", "rtsps://")):
        with _FFMPEG_OPTIONS_LOCK:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{config.rtsp_transport}"
            capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, timeouts)
    elif match := _DEVICE.match(source):
        capture = cv2.VideoCapture(int(match.group(1)), cv2.CAP_V4L2)
    else:
        path = Path(source)
        if not path.is_file():
            raise CameraError(f"camera {config.name}: video file not found: {source}")
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, timeouts)
    if not capture.isOpened():
        capture.release()
        raise CameraError(f"camera {config.name}: cannot open {redact(source)}")
    return capture


class Capture:
    """Reads one camera in its own thread; `frames.get()` gives the newest due frame.

    `pace` (files only, default on) plays a file at its own frame rate, like a live camera;
    `rate_limit` (default on) decodes only frames due at `config.fps`. Turning both off with
    `lossless=True` analyses every frame of a file as fast as the consumer takes them.
    `cameras` is how many the agent has (for `decode_nice = "auto"`).
    """

    def __init__(
        self,
        config: CameraConfig,
        *,
        sink: Sink,
        health: ComponentHealth,
        pace: bool = True,
        rate_limit: bool = True,
        lossless: bool = False,
        cameras: int = 1,
    ) -> None:
        self.config = config
        # 'auto': low priority only for the agent's one camera (see CameraConfig).
        nice = config.decode_nice
        self.nice = (SOLE_CAMERA_NICE if cameras == 1 else 0) if nice == "auto" else nice
        self.sink = sink
        self.health = health
        self.name = f"capture:{config.name}"
        self.frames = FrameSlot(lossless=lossless)
        self.is_file = not config.source.startswith(("rtsp://", "rtsps://")) and not _DEVICE.match(
            config.source
        )
        self._pace = pace and self.is_file
        self._rate_limit = rate_limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._events: asyncio.Queue[tuple[dict[str, Any], float]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._latest: Frame | None = None
        self._latest_lock = threading.Lock()
        self._reported: str | None = None
        self._offline_since: float | None = None
        self._failures = 0
        self._retry = Backoff(0.5, max(config.backoff_max_s, 0.5), jitter=0.2)
        self.finished = threading.Event()

    async def __aenter__(self) -> Capture:
        self._loop = asyncio.get_running_loop()
        self.frames.bind(self._loop)
        self._thread = threading.Thread(
            target=self._thread_main, name=f"capture-{self.config.name}", daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self.frames.close()
        if self._thread is not None:
            # A blocked read returns within its timeout; shutdown does not wait that long
            # (the thread is a daemon and holds nothing that needs closing cleanly).
            await asyncio.to_thread(self._thread.join, JOIN_TIMEOUT_S)
        await self._flush_events()
        self.health.set_state(State.STOPPED)

    async def run(self) -> None:
        while True:
            data, ts = await self._events.get()
            await self.sink(Kind.CAMERA, data, self.config.name, ts)

    async def _flush_events(self) -> None:
        while not self._events.empty():
            data, ts = self._events.get_nowait()
            try:
                await self.sink(Kind.CAMERA, data, self.config.name, ts)
            except Exception as exc:
                log.error("camera %s: event lost at shutdown: %s", self.config.name, exc)

    def latest_frame(self) -> Frame | None:
        with self._latest_lock:
            return self._latest

    def latest_jpeg(self, quality: int = 85) -> bytes | None:
        """The newest decoded frame as JPEG bytes, or None before the first frame."""
        frame = self.latest_frame()
        if frame is None:
            return None
        ok, buffer = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise CameraError(f"camera {self.config.name}: JPEG encoding failed")
        return bytes(buffer.tobytes())

    # --- the capture thread -------------------------------------------------------------

    def _emit(self, data: dict[str, Any], ts: float) -> None:
        if self._loop is None:
            return
        event = ({"camera": self.config.name, **data}, ts)
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:
            log.error("camera %s: event lost, loop closed: %s", self.config.name, data)

    def _beat(self) -> None:
        c = self.config
        self.health.beat(max(c.open_timeout_s, c.read_timeout_s, c.backoff_max_s) + 1.0)

    def _thread_main(self) -> None:
        self._lower_priority()
        try:
            while not self._stop.is_set():
                self._beat()
                try:
                    capture = open_source(self.config)
                except CameraError as exc:
                    self.health.count("open_failures")
                    self._went_offline(str(exc))
                    self._backoff()
                    continue
                try:
                    why = self._read_loop(capture)
                finally:
                    capture.release()
                if self._stop.is_set():
                    break
                self._went_offline(why)
                if why == "end of file":
                    # Finished, not wedged: a stopped component no longer owes the watchdog.
                    self.health.expect_progress(None)
                    self.health.set_state(
                        State.STOPPED, reason("end_of_file", "end of file (loop = false)")
                    )
                    break
                self._backoff()
        except Exception as exc:  # never let a thread die silently
            log.exception("camera %s: capture thread failed", self.config.name)
            self.health.expect_progress(None)
            self.health.set_state(
                State.FAILING,
                reason("capture_crashed", f"capture thread failed: {exc}"),
                error=str(exc),
            )
        finally:
            self.finished.set()
            self.frames.close()

    def _lower_priority(self) -> None:
        if not self.nice:
            return
        # On Linux the nice value belongs to the thread (setpriority(2)): only this one.
        thread = threading.get_native_id()
        try:
            nice = os.getpriority(os.PRIO_PROCESS, thread) + self.nice
            os.setpriority(os.PRIO_PROCESS, thread, min(19, nice))
        except OSError as exc:
            log.warning("camera %s: decode_nice not applied: %s", self.config.name, exc)

    def _backoff(self) -> None:
        self._failures += 1
        self._stop.wait(self._retry.next())

    def _went_online(self, source_fps: float) -> None:
        now = time.time()
        self._failures = 0
        self._retry.reset()
        self.health.set_state(State.OK, reason("online", "online", source_fps=source_fps))
        # An online camera promises frames: a read wedged past every timeout stops the
        # watchdog (the thread cannot report it itself).
        self.health.expect_progress(self._progress_within_s())
        self.health.set_facts(online=True, source_fps=source_fps)
        log.info("camera %s: online (%s)", self.config.name, redact(self.config.source))
        self._reported = "online"
        self._emit({"event": "state", "state": "online", "detail": ""}, now)
        if self._offline_since is not None:
            self._emit(
                {
                    "event": "coverage_gap",
                    "from": utc_iso(self._offline_since),
                    "to": utc_iso(now),
                    "duration_s": round(now - self._offline_since, 3),
                },
                now,
            )
            self._offline_since = None

    def _progress_within_s(self) -> float:
        c = self.config
        return max(c.open_timeout_s, c.read_timeout_s) + 3.0 / c.fps + 10.0

    def _went_offline(self, why: str) -> None:
        now = time.time()
        state = State.DEGRADED if self._failures < 3 else State.FAILING
        self.health.expect_progress(None)
        self.health.set_state(
            state, reason("camera_offline", f"offline: {why}", detail=why), error=why
        )
        self.health.set_facts(online=False)
        if self._reported != "offline":
            self._reported = "offline"
            self._offline_since = now
            self.health.count("went_offline")
            log.warning("camera %s: offline (%s)", self.config.name, why)
            self._emit({"event": "state", "state": "offline", "detail": why}, now)

    def _read_loop(self, capture: Any) -> str:
        source_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not 0 < source_fps <= 240:
            source_fps = 0.0
        self._went_online(source_fps)
        interval = 1.0 / self.config.fps
        next_due = 0.0
        started = time.monotonic()
        played = 0
        index = 0
        while not self._stop.is_set():
            self._beat()
            if not capture.grab():
                if self.is_file and self.config.loop and played > 0:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    started, played = time.monotonic(), 0
                    continue
                return "end of file" if self.is_file else "read failed or timed out"
            played += 1
            index += 1
            self.health.progress("frames_captured")
            if self._pace and source_fps:
                delay = started + played / source_fps - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
            now = time.monotonic()
            # A little slack, so a frame arriving a hair early for its slot is not skipped.
            if self._rate_limit and now + 0.01 < next_due:
                self.health.count("frames_skipped")
                continue
            next_due = next_due + interval if next_due + interval > now else now + interval
            ok, image = capture.retrieve()
            if not ok or image is None:
                return "frame could not be decoded"
            frame = Frame(image=image, ts=time.time(), index=index)
            with self._latest_lock:
                self._latest = frame
            if not self.frames.put(frame):
                self.health.count("frames_dropped")
        return "stopped"
