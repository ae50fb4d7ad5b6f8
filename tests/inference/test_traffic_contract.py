"""Every traffic event kind validates against the contract schema and the reference
receiver stores it: events produced by the real analytics from scripted tracks, encoded as
the outbox encodes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from edge_agent.contract import Envelope, Kind
from edge_agent.inference.analytics import TrafficAnalytics
from edge_agent.inference.snapshots import SnapshotStore
from edge_agent.ioc.intake import DataMessage, Intake
from edge_agent.ioc.sqlite_store import SqliteStore
from tests.sync.schema import validate

from .scripted import Script, line_path
from .test_analytics import EAST, NORTH, NORTH_EAST, T0, camera
from .test_rules import KERB, ONE_WAY, SQUARE


def traffic_events() -> list[tuple[Kind, dict[str, Any]]]:
    a = {"name": "a", "points": [(0, 0.3), (1, 0.3)], "directions": ["down", "up"]}
    b = {"name": "b", "points": [(0, 0.7), (1, 0.7)], "directions": ["down", "up"]}
    config = camera(
        count_interval_s=60,
        zones=[SQUARE, KERB],
        lines=[NORTH, EAST, ONE_WAY, a, b],
        movements=[NORTH_EAST],
        speed=[{"name": "ab", "lines": ["a", "b"], "distance_m": 20}],
        rules=[
            {"kind": "dwell", "zone": "square", "dwell_s": 5},
            {"kind": "stopped", "zone": "kerb", "stopped_s": 5},
            {"kind": "crowd", "zone": "square", "max_people": 1, "for_s": 2},
        ],
    )
    s = Script(TrafficAnalytics(config))
    right_turn = line_path((0.5, 0.1), (0.5, 0.5), 8) + line_path((0.5, 0.5), (0.9, 0.5), 8)[1:]
    s.walk(
        T0, 1.0, {1: ("car", right_turn), 2: ("two_wheeler", line_path((0.4, 0.9), (0.4, 0.1), 8))}
    )
    for second in range(20, 30):
        s.frame(
            T0 + second,
            {3: ("person", (0.4, 0.4)), 4: ("person", (0.6, 0.4)), 5: ("car", (0.5, 0.9))},
        )
    s.events += s.analytics.finish(T0 + 60)
    return s.events


def test_each_traffic_kind_validates_and_is_stored(tmp_path: Path) -> None:
    events = traffic_events()
    plate = {
        "camera": "cam", "line": "north", "track_id": 9, "label": "car", "text": "59-X1 123.45",
        "confidence": 0.98, "box": [1.0, 2.0, 300.0, 200.0],
        "plate_box": [40.0, 150.0, 120.0, 190.0], "frame_size": [1000, 1000],
        "snapshot": "1767574800000-plate-9-north.jpg",
    }  # fmt: skip
    events.append((Kind.PLATE, plate))
    kinds = {k for k, _ in events}
    assert {Kind.DWELL, Kind.STOPPED, Kind.WRONG_WAY, Kind.CROWD, Kind.COUNT} <= kinds
    shapes = {
        next(s for s in ("zone", "line", "movements", "speed") if s in d)
        for k, d in events
        if k is Kind.COUNT
    }
    assert shapes == {"zone", "line", "movements", "speed"}
    # The provincial receiver's own intake (schema check) and store.
    intake = Intake("ioc/v1")
    store = SqliteStore(tmp_path / "ioc.sqlite3")
    try:
        messages = []
        for seq, (kind, data) in enumerate(events, start=1):
            envelope = Envelope("node-01", "e1", seq, T0, kind.value, data)
            validate("envelope", envelope.to_dict())
            parsed = intake.parse("ioc/v1/d1/node-01/data/cam", envelope.encode())
            assert isinstance(parsed, DataMessage), parsed
            messages.append(parsed)
        store.write(messages, [], T0)
        rows = store.conn.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall()
    finally:
        store.close()
    stored = dict(rows)
    assert sum(stored.values()) == len(events)
    assert set(stored) >= {"dwell", "stopped", "wrong_way", "crowd", "plate", "count", "detection"}


@pytest.mark.parametrize(
    "kind, data",
    [
        ("plate", {"camera": "c", "line": "l", "track_id": 1, "label": "car", "text": "HELLO",
                   "confidence": 0.9, "box": [0, 0, 1, 1], "frame_size": [2, 2]}),
        ("count", {"camera": "c", "from": "2026-01-05T01:00:00.000Z",
                   "to": "2026-01-05T01:15:00.000Z", "interval_s": 900, "coverage": 1.5,
                   "movements": {}}),
        ("crowd", {"camera": "c", "zone": "z", "people": 3}),
    ],
)  # fmt: skip
def test_schema_refuses_what_the_contract_forbids(kind: str, data: dict[str, Any]) -> None:
    envelope = Envelope("node-01", "e1", 1, T0, kind, data)
    with pytest.raises(jsonschema.ValidationError):
        validate("envelope", envelope.to_dict())


def test_snapshot_names_are_safe_file_names(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_count=5, max_bytes=10**7)
    saved = store.save(np.zeros((8, 8, 3), np.uint8), "1767574800000-wrong_way-2-one_way")
    assert saved is not None and store.read(saved.name) == saved.read_bytes()
    assert store.read("../x.jpg") is None and store.read("a/b.jpg") is None
