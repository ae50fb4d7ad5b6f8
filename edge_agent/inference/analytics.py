"""One camera's traffic analytics over tracks: zone entries, line crossings, movements,
speeds and rules, counted per class in clock-aligned bins with their coverage.

Synchronous and free of OpenCV and the detector: scripted tracks drive it in the tests
exactly as the pipeline's tracker does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.config.cameras import TRAFFIC_CLASSES, CameraConfig, ZoneConfig
from edge_agent.contract import Kind, utc_iso
from edge_agent.inference.bins import BinClock, Coverage
from edge_agent.inference.lines import LineCrossings
from edge_agent.inference.movements import Movements
from edge_agent.inference.rules import RuleHit, Rules
from edge_agent.inference.speed import SpeedMeter, speed_stats
from edge_agent.inference.tracker import Track
from edge_agent.inference.zones import WHOLE_FRAME, anchor, inside

Event = tuple[Kind, dict[str, Any]]
LAST_RULE_EVENTS = 10


def _add(counts: dict[str, int], label: str) -> None:
    counts[label] = counts.get(label, 0) + 1


@dataclass
class _Bin:
    start: float
    present: dict[str, dict[str, set[int]]] = field(default_factory=dict)
    entries: dict[str, dict[str, int]] = field(default_factory=dict)
    crossings: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    movements: dict[str, dict[str, int]] = field(default_factory=dict)
    speeds: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass
class Step:
    """What one frame produced: events (bins closed first), rule hits (their data also
    in `events`, to attach snapshots to), and tracks due a plate read."""

    events: list[Event] = field(default_factory=list)
    hits: list[RuleHit] = field(default_factory=list)
    plate_reads: list[tuple[Track, str]] = field(default_factory=list)


class TrafficAnalytics:
    """Turns one camera's tracks into events. Without zones, one zone `frame` covers the
    picture."""

    def __init__(self, config: CameraConfig, *, gap_s: float | None = None) -> None:
        self.config = config
        self.camera = config.name
        self.zones: list[ZoneConfig] = list(config.zones) or [WHOLE_FRAME]
        self.clock = BinClock(config.count_interval_s, config.timezone)
        # Frames further apart than this mean the camera (or the analysis) was away.
        self.coverage = Coverage(
            self.clock, gap_s if gap_s is not None else max(10.0, 5 / config.fps)
        )
        self.lines = LineCrossings(config.lines)
        self.movements = Movements(config.movements)
        self.speed = SpeedMeter(config.speed)
        self.rules = Rules(config.name, config.rules)
        self.classes: tuple[str, ...] = (
            TRAFFIC_CLASSES
            if config.classes == "traffic"
            else tuple(config.classes)
            if isinstance(config.classes, list)
            else ()
        )
        self._bins: dict[float, _Bin] = {}
        self._next_start: float | None = None
        self._reported: dict[tuple[int, str], float] = {}
        self._wrong_way: set[tuple[int, str]] = set()
        self._plated: set[int] = set()
        self.today_date = ""
        self.today: dict[str, dict[str, int]] = {}
        self.today_lines: dict[str, dict[str, dict[str, int]]] = {}
        self.last_rule_events: deque[dict[str, Any]] = deque(maxlen=LAST_RULE_EVENTS)

    # --- bins -----------------------------------------------------------------------------

    def _bin(self, ts: float) -> _Bin:
        start = self.clock.start_of(ts)
        if self._next_start is None:
            self._next_start = start
        # A frame older than the bins already published counts in the oldest open one.
        start = max(start, self._next_start)
        found = self._bins.get(start)
        if found is None:
            found = self._bins[start] = _Bin(start)
        return found

    def frame_seen(self, ts: float) -> None:
        """An analysed frame: counts toward coverage."""
        self.coverage.frame(ts)
        if self._next_start is None:
            self._next_start = self.clock.start_of(ts)

    def tick(self, now: float) -> list[Event]:
        """`count` events of every bin that has ended and is settled, empty ones included."""
        if self._next_start is None:
            self._next_start = self.clock.start_of(now)
        settled = self.coverage.settled_until(now)
        events: list[Event] = []
        while self._next_start + self.clock.interval_s <= settled:
            events += self._publish(self._next_start, self._next_start + self.clock.interval_s)
            self._next_start += self.clock.interval_s
        return events

    def finish(self, ts: float) -> list[Event]:
        """Every bin up to `ts`, the unfinished one cut at `ts` (at shutdown)."""
        events = self.tick(ts)
        if self._next_start is not None and ts > self._next_start:
            events += self._publish(self._next_start, ts)
            self._next_start = None
        return events

    def _publish(self, start: float, end: float) -> list[Event]:
        counts = self._bins.pop(start, None) or _Bin(start)
        full_end = start + self.clock.interval_s
        head = {
            "camera": self.camera,
            "from": utc_iso(start),
            "to": utc_iso(min(end, full_end)),
            "interval_s": self.clock.interval_s,
            "coverage": round(self.coverage.take(start, min(end, full_end)), 4),
        }
        events: list[Event] = []
        for zone in self.zones:
            present = counts.present.get(zone.name, {})
            data = {
                **head,
                "zone": zone.name,
                "objects": {label: len(ids) for label, ids in sorted(present.items())},
                "entries": dict(sorted(counts.entries.get(zone.name, {}).items())),
            }
            events.append((Kind.COUNT, data))
        for line in self.config.lines:
            crossings = counts.crossings.get(line.name, {})
            per_dir = {d: dict(sorted(crossings.get(d, {}).items())) for d in line.directions}
            events.append((Kind.COUNT, {**head, "line": line.name, "crossings": per_dir}))
        if self.config.movements:
            movements = {
                m.name: {
                    **dict.fromkeys(self.classes, 0),
                    **counts.movements.get(m.name, {}),
                }
                for m in self.config.movements
            }
            events.append((Kind.COUNT, {**head, "movements": movements}))
        for stretch in self.config.speed:
            samples = counts.speeds.get(stretch.name, {})
            stats = {label: speed_stats(v) for label, v in sorted(samples.items())}
            data = {**head, "speed": stretch.name, "distance_m": stretch.distance_m}
            events.append((Kind.COUNT, {**data, "speeds": stats}))
        return events

    # --- per frame ------------------------------------------------------------------------

    def update(self, tracks: Sequence[Track], ts: float, width: int, height: int) -> Step:
        """Events caused by the tracks as they stand at `ts`, after those of every bin
        that ended before it."""
        self.frame_seen(ts)
        step = Step(events=self.tick(ts))
        counts = self._bin(ts)
        self._roll_today(ts)
        live = [t for t in tracks if t.confirmed]
        points = {t.id: anchor(t.box, width, height) for t in live}
        members: dict[str, set[int]] = {}
        for track in live:
            self._zones(track, points[track.id], ts, counts, members, step, width, height)
        for track in tracks:
            # Unconfirmed tracks too: their first position says which side they came from
            # (a crossing needs two positions, so it is never one of a single-hit track).
            if track.updated:
                point = points.get(track.id) or anchor(track.box, width, height)
                self._cross(track, point, ts, counts, step, width, height)
        hits = self.rules.update(live, points, members, ts)
        for hit in hits:
            if hit.track is not None:
                hit.data.update(self._box_data(hit.track, width, height, zone=None))
            step.events.append((hit.kind, hit.data))
        step.hits += hits
        self._forget(tracks, ts)
        return step

    def _zones(
        self,
        track: Track,
        point: tuple[float, float],
        ts: float,
        counts: _Bin,
        members: dict[str, set[int]],
        step: Step,
        width: int,
        height: int,
    ) -> None:
        for zone in self.zones:
            if zone.classes and track.label not in zone.classes:
                continue
            if not inside(point, zone.polygon):
                track.zones.discard(zone.name)
                continue
            members.setdefault(zone.name, set()).add(track.id)
            present = counts.present.setdefault(zone.name, {})
            present.setdefault(track.label, set()).add(track.id)
            if zone.name in track.zones:
                continue
            track.zones.add(zone.name)
            _add(counts.entries.setdefault(zone.name, {}), track.label)
            self._completes(track, zone.name, None, counts)
            last = self._reported.get((track.id, zone.name))
            if last is None or ts - last >= self.config.detection_cooldown_s:
                self._reported[(track.id, zone.name)] = ts
                data = self._box_data(track, width, height, zone=zone.name)
                step.events.append((Kind.DETECTION, data))

    def _cross(
        self,
        track: Track,
        point: tuple[float, float],
        ts: float,
        counts: _Bin,
        step: Step,
        width: int,
        height: int,
    ) -> None:
        for crossing in self.lines.update(track.id, point):
            line = crossing.line
            if line.classes and track.label not in line.classes:
                continue
            if crossing.first:
                per_dir = counts.crossings.setdefault(line.name, {})
                _add(per_dir.setdefault(crossing.direction, {}), track.label)
                today = self.today_lines.setdefault(line.name, {})
                _add(today.setdefault(crossing.direction, {}), track.label)
            self._completes(track, line.name, crossing.direction, counts)
            for stretch, kmh in self.speed.crossed(track.id, line.name, ts):
                counts.speeds.setdefault(stretch.name, {}).setdefault(track.label, []).append(kmh)
            key = (track.id, line.name)
            allowed = line.allowed_direction
            if allowed is not None and crossing.direction != allowed and key not in self._wrong_way:
                self._wrong_way.add(key)
                data = {
                    "camera": self.camera,
                    "line": line.name,
                    "direction": crossing.direction,
                    "allowed_direction": allowed,
                    **self._box_data(track, width, height, zone=None),
                }
                hit = RuleHit(Kind.WRONG_WAY, data, track)
                step.hits.append(hit)
                step.events.append((hit.kind, hit.data))
            plates = self.config.plates
            if (
                plates.enabled
                and (not plates.lines or line.name in plates.lines)
                and track.label in plates.classes
                and track.id not in self._plated
            ):
                self._plated.add(track.id)
                step.plate_reads.append((track, line.name))

    def _completes(self, track: Track, element: str, direction: str | None, counts: _Bin) -> None:
        movement = self.movements.touch(track.id, element, direction)
        if movement is not None:
            _add(counts.movements.setdefault(movement.name, {}), track.label)
            _add(self.today.setdefault(movement.name, {}), track.label)

    def _roll_today(self, ts: float) -> None:
        date = self.clock.local_date(ts)
        if date != self.today_date:
            self.today_date, self.today, self.today_lines = date, {}, {}

    def note_rule_event(self, kind: Kind, data: dict[str, Any], ts: float) -> None:
        """Remember a raised event for the status page (newest last)."""
        keep = ("zone", "line", "track_id", "label", "text", "snapshot")
        self.last_rule_events.append(
            {"kind": kind.value, "ts": utc_iso(ts), **{k: data[k] for k in keep if k in data}}
        )

    def _forget(self, tracks: Sequence[Track], ts: float) -> None:
        live = {t.id for t in tracks}
        self._reported = {
            key: when
            for key, when in self._reported.items()
            if key[0] in live or ts - when < self.config.detection_cooldown_s
        }
        self.lines.forget(live)
        self.movements.forget(live)
        self.speed.forget(live)
        self.rules.forget(live)
        self._wrong_way = {k for k in self._wrong_way if k[0] in live}
        self._plated &= live

    def _box_data(
        self, track: Track, width: int, height: int, *, zone: str | None
    ) -> dict[str, Any]:
        x1, y1, x2, y2 = track.box
        data: dict[str, Any] = {} if zone is None else {"camera": self.camera, "zone": zone}
        data.update(
            track_id=track.id,
            label=track.label,
            class_id=track.class_id,
            score=round(track.score, 4),
            box=[round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)],
            frame_size=[width, height],
        )
        return data
