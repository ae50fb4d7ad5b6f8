"""Rules that raise events: dwell, stopped, crowd (zones) and wrong way (directed lines).

Each situation makes one event: a person's stay in a zone fires once, a vehicle's stop
fires once, a crowd fires once while it lasts, a wrong-way track once per line; after an
event the same track (or zone, for a crowd) waits `cooldown_s` before it may fire again.
Timers run on the frames' timestamps, so a file analysed faster than real time gives the
same events as the live camera.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.config.cameras import CrowdRule, DwellRule, RuleConfig, StoppedRule
from edge_agent.contract import Kind, utc_iso
from edge_agent.inference.tracker import Track

Point = tuple[float, float]


@dataclass
class RuleHit:
    """One event a rule raised; `track` is None for a crowd."""

    kind: Kind
    data: dict[str, Any]
    track: Track | None = None


@dataclass
class _Stay:
    since: float
    fired: bool = False


@dataclass
class _Stop:
    where: Point
    since: float
    fired: bool = False


@dataclass
class _Crowd:
    since: float | None = None
    fired_at: float | None = None
    armed: bool = True


@dataclass
class RuleState:
    stays: dict[tuple[int, int], _Stay] = field(default_factory=dict)
    stops: dict[tuple[int, int], _Stop] = field(default_factory=dict)
    last_fired: dict[tuple[int, int], float] = field(default_factory=dict)
    crowds: dict[int, _Crowd] = field(default_factory=dict)


class Rules:
    """The zone rules of one camera, fed every analysed frame."""

    def __init__(self, camera: str, rules: Sequence[RuleConfig]) -> None:
        self.camera = camera
        self.rules = list(rules)
        self.state = RuleState()

    def update(
        self,
        tracks: Sequence[Track],
        points: Mapping[int, Point],
        inside: Mapping[str, set[int]],
        ts: float,
    ) -> list[RuleHit]:
        """`tracks`: live confirmed tracks; `points`: their anchors; `inside`: zone → ids
        of the tracks whose anchor is in it now."""
        hits: list[RuleHit] = []
        for index, rule in enumerate(self.rules):
            members = inside.get(rule.zone, set())
            watched = [t for t in tracks if t.label in rule.classes]
            if isinstance(rule, DwellRule):
                hits += self._dwell(index, rule, watched, members, ts)
            elif isinstance(rule, StoppedRule):
                hits += self._stopped(index, rule, watched, members, points, ts)
            else:
                hits += self._crowd(index, rule, watched, members, ts)
        return hits

    def _cooled(self, key: tuple[int, int], cooldown_s: float, ts: float) -> bool:
        last = self.state.last_fired.get(key)
        return last is None or ts - last >= cooldown_s

    def _dwell(
        self, index: int, rule: DwellRule, tracks: Sequence[Track], members: set[int], ts: float
    ) -> list[RuleHit]:
        hits = []
        for track in tracks:
            key = (index, track.id)
            if track.id not in members:
                self.state.stays.pop(key, None)
                continue
            stay = self.state.stays.setdefault(key, _Stay(ts))
            if stay.fired or ts - stay.since < rule.dwell_s:
                continue
            stay.fired = True
            if not self._cooled(key, rule.cooldown_s, ts):
                continue
            self.state.last_fired[key] = ts
            data = self._about(track, rule.zone, stay.since, ts)
            data["dwell_s"] = round(ts - stay.since, 1)
            hits.append(RuleHit(Kind.DWELL, data, track))
        return hits

    def _stopped(
        self,
        index: int,
        rule: StoppedRule,
        tracks: Sequence[Track],
        members: set[int],
        points: Mapping[int, Point],
        ts: float,
    ) -> list[RuleHit]:
        hits = []
        for track in tracks:
            key = (index, track.id)
            point = points.get(track.id)
            if point is None or track.id not in members:
                self.state.stops.pop(key, None)
                continue
            stop = self.state.stops.get(key)
            if stop is None or math.dist(point, stop.where) > rule.radius:
                # Moving (or just arrived): a stop starts here and now.
                self.state.stops[key] = _Stop(point, ts)
                continue
            if stop.fired or ts - stop.since < rule.stopped_s:
                continue
            stop.fired = True
            if not self._cooled(key, rule.cooldown_s, ts):
                continue
            self.state.last_fired[key] = ts
            data = self._about(track, rule.zone, stop.since, ts)
            data["stopped_s"] = round(ts - stop.since, 1)
            hits.append(RuleHit(Kind.STOPPED, data, track))
        return hits

    def _crowd(
        self, index: int, rule: CrowdRule, tracks: Sequence[Track], members: set[int], ts: float
    ) -> list[RuleHit]:
        crowd = self.state.crowds.setdefault(index, _Crowd())
        people = sum(1 for t in tracks if t.id in members)
        if people <= rule.max_people:
            crowd.since = None
            if not crowd.armed and (
                crowd.fired_at is None or ts - crowd.fired_at >= rule.cooldown_s
            ):
                crowd.armed = True
            return []
        if crowd.since is None:
            crowd.since = ts
        if not crowd.armed or ts - crowd.since < rule.for_s:
            return []
        crowd.armed = False
        crowd.fired_at = ts
        data = {
            "camera": self.camera,
            "zone": rule.zone,
            "people": people,
            "max_people": rule.max_people,
            "since": utc_iso(crowd.since),
            "for_s": round(ts - crowd.since, 1),
        }
        return [RuleHit(Kind.CROWD, data)]

    def _about(self, track: Track, zone: str, since: float, ts: float) -> dict[str, Any]:
        return {
            "camera": self.camera,
            "zone": zone,
            "track_id": track.id,
            "label": track.label,
            "since": utc_iso(since),
        }

    def forget(self, live: Iterable[int]) -> None:
        keep = set(live)
        s = self.state
        s.stays = {k: v for k, v in s.stays.items() if k[1] in keep}
        s.stops = {k: v for k, v in s.stops.items() if k[1] in keep}
        # Cool-downs outlive a track only as long as they matter: ids are never reused.
        s.last_fired = {k: v for k, v in s.last_fired.items() if k[1] in keep}
