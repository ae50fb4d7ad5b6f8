"""Scripted tracks for the analytics tests: no detector, positions given frame by frame."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_agent.contract import Kind
from edge_agent.inference.analytics import TrafficAnalytics
from edge_agent.inference.tracker import Track

SIZE = 1000  # frame width and height in pixels
Point = tuple[float, float]


def box_at(
    point: Point, width: float = 0.04, height: float = 0.1
) -> tuple[float, float, float, float]:
    """A pixel box whose bottom centre (the anchor) is the normalised `point`."""
    x, y = point[0] * SIZE, point[1] * SIZE
    return (x - width * SIZE / 2, y - height * SIZE, x + width * SIZE / 2, y)


def line_path(a: Point, b: Point, steps: int) -> list[Point]:
    return [
        (a[0] + (b[0] - a[0]) * k / steps, a[1] + (b[1] - a[1]) * k / steps)
        for k in range(steps + 1)
    ]


class Script:
    """Drives a TrafficAnalytics with tracks whose anchors follow given paths."""

    def __init__(self, analytics: TrafficAnalytics) -> None:
        self.analytics = analytics
        self.tracks: dict[int, Track] = {}
        self.events: list[tuple[Kind, dict[str, Any]]] = []

    def frame(
        self, ts: float, positions: dict[int, tuple[str, Point]]
    ) -> list[tuple[Kind, dict[str, Any]]]:
        """One frame at `ts`: each track id at its (label, anchor); others are gone."""
        live = []
        for track_id, (label, point) in positions.items():
            track = self.tracks.get(track_id)
            if track is None:
                track = self.tracks[track_id] = Track(
                    track_id, label, 0, box_at(point), 0.9, ts, ts, hits=2
                )
            else:
                track.previous_box, track.box = track.box, box_at(point)
                track.hits += 1
                track.last_ts = ts
            track.updated = True
            live.append(track)
        for gone in set(self.tracks) - set(positions):
            del self.tracks[gone]
        events = self.analytics.update(live, ts, SIZE, SIZE).events
        self.events += events
        return events

    def walk(
        self, t0: float, dt: float, paths: dict[int, tuple[str, Sequence[Point]]]
    ) -> list[tuple[Kind, dict[str, Any]]]:
        """Frames every `dt` from `t0` until the longest path ends."""
        events = []
        for step in range(max(len(p) for _, p in paths.values())):
            positions = {i: (label, p[step]) for i, (label, p) in paths.items() if step < len(p)}
            events += self.frame(t0 + step * dt, positions)
        return events

    def of(self, kind: Kind) -> list[dict[str, Any]]:
        return [d for k, d in self.events if k is kind]
