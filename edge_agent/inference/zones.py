"""Zones and lines over tracks: entry `detection` events, per-interval `count` events and
line crossings by direction. Coordinates are normalised (0..1) so the same configuration
fits any stream resolution; an object's position is the bottom centre of its box (where
it stands)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.config.cameras import CameraConfig, LineConfig, ZoneConfig
from edge_agent.contract import Kind, utc_iso
from edge_agent.inference.tracker import Box, Track

WHOLE_FRAME = ZoneConfig(name="frame", polygon=[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)])


def anchor(box: Box, width: int, height: int) -> tuple[float, float]:
    """Bottom centre of a pixel box, normalised."""
    return ((box[0] + box[2]) / 2 / width, box[3] / height)


def inside(point: tuple[float, float], polygon: Sequence[tuple[float, float]]) -> bool:
    """Ray casting; points on an edge may land either side."""
    x, y = point
    result = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            result = not result
        j = i
    return result


def side(line: LineConfig, point: tuple[float, float]) -> float:
    """Positive on the right of the line walked from its first point to its second (as seen
    in the image, y pointing down), negative on its left."""
    (ax, ay), (bx, by) = line.points
    return (bx - ax) * (point[1] - ay) - (by - ay) * (point[0] - ax)


def crosses(line: LineConfig, a: tuple[float, float], b: tuple[float, float]) -> int:
    """+1 when a→b crosses the segment from its left to its right, -1 the other way, 0 not."""
    sa, sb = side(line, a), side(line, b)
    if sa == 0 or sb == 0 or (sa > 0) == (sb > 0):
        return 0
    # The path must also cross within the segment, not on its extension.
    (px, py), (qx, qy) = line.points
    s1 = (b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0])
    s2 = (b[0] - a[0]) * (qy - a[1]) - (b[1] - a[1]) * (qx - a[0])
    if (s1 > 0) == (s2 > 0) and s1 != 0 and s2 != 0:
        return 0
    return 1 if sa < 0 < sb else -1


@dataclass
class _Interval:
    start: float
    present: dict[str, dict[str, set[int]]]  # zone → label → track ids seen inside
    entries: dict[str, dict[str, int]]  # zone → label → entries
    crossings: dict[str, dict[str, dict[str, int]]]  # line → direction → label → count


def _empty(start: float) -> _Interval:
    return _Interval(start, {}, {}, {})


class ZoneAnalytics:
    """Turns tracks into events for one camera. No zones configured means one zone,
    `frame`, covering the whole picture."""

    def __init__(self, config: CameraConfig) -> None:
        self.camera = config.name
        self.zones = list(config.zones) or [WHOLE_FRAME]
        self.lines = list(config.lines)
        self.interval_s = config.count_interval_s
        self.cooldown_s = config.detection_cooldown_s
        self._interval: _Interval | None = None
        self._reported: dict[tuple[int, str], float] = {}

    def update(
        self, tracks: Sequence[Track], ts: float, width: int, height: int
    ) -> list[tuple[Kind, dict[str, Any]]]:
        """Events caused by the tracks as they stand at `ts`, including the counts of any
        interval that has ended."""
        events = self.flush(ts)
        if self._interval is None:
            self._interval = _empty(math.floor(ts / self.interval_s) * self.interval_s)
        interval = self._interval
        for track in tracks:
            if not track.updated or not track.confirmed:
                continue
            point = anchor(track.box, width, height)
            for zone in self.zones:
                if zone.classes and track.label not in zone.classes:
                    continue
                if not inside(point, zone.polygon):
                    track.zones.discard(zone.name)
                    continue
                interval.present.setdefault(zone.name, {}).setdefault(track.label, set()).add(
                    track.id
                )
                if zone.name in track.zones:
                    continue
                track.zones.add(zone.name)
                per_label = interval.entries.setdefault(zone.name, {})
                per_label[track.label] = per_label.get(track.label, 0) + 1
                last = self._reported.get((track.id, zone.name))
                if last is None or ts - last >= self.cooldown_s:
                    self._reported[(track.id, zone.name)] = ts
                    events.append((Kind.DETECTION, self._detection(track, zone, width, height)))
            if track.previous_box is not None:
                before = anchor(track.previous_box, width, height)
                for line in self.lines:
                    if line.classes and track.label not in line.classes:
                        continue
                    direction = crosses(line, before, point)
                    if direction:
                        name = line.directions[0 if direction > 0 else 1]
                        per_dir = interval.crossings.setdefault(line.name, {})
                        per_label = per_dir.setdefault(name, {})
                        per_label[track.label] = per_label.get(track.label, 0) + 1
        live = {t.id for t in tracks}
        self._reported = {
            key: when
            for key, when in self._reported.items()
            if key[0] in live or ts - when < self.cooldown_s
        }
        return events

    def flush(self, ts: float, *, force: bool = False) -> list[tuple[Kind, dict[str, Any]]]:
        """`count` events for the current interval if it has ended (or `force`)."""
        interval = self._interval
        if interval is None:
            return []
        end = interval.start + self.interval_s
        if ts < end and not force:
            return []
        self._interval = None
        window = {"from": utc_iso(interval.start), "to": utc_iso(min(ts, end))}
        events: list[tuple[Kind, dict[str, Any]]] = []
        for zone in self.zones:
            present = interval.present.get(zone.name, {})
            events.append(
                (
                    Kind.COUNT,
                    {
                        "camera": self.camera,
                        "zone": zone.name,
                        **window,
                        "interval_s": self.interval_s,
                        "objects": {label: len(ids) for label, ids in sorted(present.items())},
                        "entries": dict(sorted(interval.entries.get(zone.name, {}).items())),
                    },
                )
            )
        for line in self.lines:
            crossings = interval.crossings.get(line.name, {})
            events.append(
                (
                    Kind.COUNT,
                    {
                        "camera": self.camera,
                        "line": line.name,
                        **window,
                        "interval_s": self.interval_s,
                        "crossings": {
                            d: dict(sorted(crossings.get(d, {}).items())) for d in line.directions
                        },
                    },
                )
            )
        return events

    def _detection(self, track: Track, zone: ZoneConfig, width: int, height: int) -> dict[str, Any]:
        x1, y1, x2, y2 = track.box
        return {
            "camera": self.camera,
            "zone": zone.name,
            "track_id": track.id,
            "label": track.label,
            "class_id": track.class_id,
            "score": round(track.score, 4),
            "box": [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)],
            "frame_size": [width, height],
        }
