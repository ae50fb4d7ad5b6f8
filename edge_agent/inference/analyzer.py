"""One camera's analysis of a frame, synchronous: motion gate → detector → classes →
tracker → traffic analytics, with plates and snapshots for the events that need them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.config.cameras import CameraConfig
from edge_agent.contract import Kind
from edge_agent.inference.analytics import TrafficAnalytics
from edge_agent.inference.classes import ClassFilter
from edge_agent.inference.detector import Detection
from edge_agent.inference.motion import MotionGate
from edge_agent.inference.plates import PlateReader
from edge_agent.inference.snapshots import SnapshotStore
from edge_agent.inference.tracker import Track, Tracker

DetectFn = Callable[[np.ndarray], list[Detection]]


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


@dataclass(frozen=True)
class Step:
    """A frame past the gate, waiting for the detector's result (see `FrameAnalyzer.begin`)."""

    image: np.ndarray
    ts: float
    detect: bool
    reason: str


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
        step = self.begin(image, ts)
        detections = self.detect(image) if step.detect and self.detect is not None else None
        return self.complete(step, detections)

    def begin(self, image: np.ndarray, ts: float) -> Step:
        """`analyse()` in two halves around the detector: the gate says whether it runs on
        this frame; `complete` takes its detections (None when it did not run). Frames go
        through `begin` in order and through `complete` in the same order; the next frame
        may begin before this one completes."""
        self.frames += 1
        if self.detect is None:
            return Step(image, ts, detect=False, reason="")
        decision = self.gate.decide(image, ts)
        if decision.run:
            self.detector_runs += 1
        return Step(image, ts, detect=decision.run, reason=decision.reason)

    def complete(self, step: Step, detections: list[Detection] | None) -> Analysis:
        image, ts = step.image, step.ts
        result = Analysis(gate_reason=step.reason)
        if self.detect is None:
            # No detector, nothing seen: the bins still close, with the time uncovered,
            # so zero counts never claim an empty street.
            result.events = self.analytics.tick(ts)
            return result
        if detections is not None:
            result.detected = True
            result.detections = self.classes.apply(detections)
            result.tracks = self.tracker.update(result.detections, ts)
        else:
            result.tracks = self.tracker.keep_alive(ts)
        height, width = image.shape[:2]
        update = self.analytics.update(result.tracks, ts, width, height)
        result.events = update.events
        for track, line in update.plate_reads:
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
