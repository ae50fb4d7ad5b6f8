"""A light multi-object tracker: greedy IoU matching with a centroid-distance fallback.

Good enough at a few frames per second for counting: a track keeps its id while its
object keeps overlapping (or stays near) its last box, and dies after `max_age_s` unseen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_agent.inference.detector import Detection

Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centre(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


@dataclass
class Track:
    """One object followed over frames; `previous_box` is its box one update earlier."""

    id: int
    label: str
    class_id: int
    box: Box
    score: float
    first_ts: float
    last_ts: float
    hits: int = 1
    previous_box: Box | None = None
    updated: bool = True
    zones: set[str] = field(default_factory=set)

    @property
    def confirmed(self) -> bool:
        return self.hits >= 2


class Tracker:
    """Follows detections from frame to frame and gives each object a track id."""

    def __init__(
        self, *, iou_threshold: float = 0.2, max_distance: float = 1.0, max_age_s: float = 2.0
    ) -> None:
        self.iou_threshold = iou_threshold
        self.max_distance = max_distance
        self.max_age_s = max_age_s
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, detections: Sequence[Detection], ts: float) -> list[Track]:
        """Match this frame's detections; returns the live tracks (updated ones marked)."""
        for track in self.tracks:
            track.updated = False
        pairs: list[tuple[float, int, int]] = []
        for ti, track in enumerate(self.tracks):
            for di, det in enumerate(detections):
                # By reported class: a motorbike the detector calls a bicycle in one frame
                # is still the same two-wheeler.
                if det.label != track.label:
                    continue
                overlap = iou(track.box, det.box)
                if overlap >= self.iou_threshold:
                    pairs.append((1.0 + overlap, ti, di))
                    continue
                # At low frame rates a walker may not overlap its last box: allow a match
                # within `max_distance` box sizes, scored below any overlap.
                (tx, ty), (dx, dy) = centre(track.box), centre(det.box)
                size = max(track.box[2] - track.box[0], track.box[3] - track.box[1], 1.0)
                distance = ((tx - dx) ** 2 + (ty - dy) ** 2) ** 0.5 / size
                if distance <= self.max_distance:
                    pairs.append((1.0 - distance / (self.max_distance + 1e-9) * 0.999, ti, di))
        pairs.sort(reverse=True)
        used_tracks: set[int] = set()
        used_dets: set[int] = set()
        for _, ti, di in pairs:
            if ti in used_tracks or di in used_dets:
                continue
            used_tracks.add(ti)
            used_dets.add(di)
            self._refresh(self.tracks[ti], detections[di], ts)
        for di, det in enumerate(detections):
            if di not in used_dets:
                self.tracks.append(
                    Track(self._next_id, det.label, det.class_id, det.box, det.score, ts, ts)
                )
                self._next_id += 1
        self.tracks = [t for t in self.tracks if ts - t.last_ts <= self.max_age_s]
        return list(self.tracks)

    def _refresh(self, track: Track, det: Detection, ts: float) -> None:
        track.previous_box = track.box
        track.box = det.box
        track.score = det.score
        track.last_ts = ts
        track.hits += 1
        track.updated = True

    def keep_alive(self, ts: float) -> list[Track]:
        """A frame the motion gate found still: nothing moved, so every track is still where
        it was (a parked car must not expire between heartbeats). None counts as updated."""
        for track in self.tracks:
            track.updated = False
            track.last_ts = ts
        return list(self.tracks)
