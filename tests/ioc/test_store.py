"""The stores on both engines: dedupe, the analyst's tables and views, holes, statuses."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.ioc.intake import DataMessage, Intake, StatusMessage
from edge_agent.ioc.store import Store
from tests.conftest import agent_command, agent_env
from tests.ioc.conftest import PREFIX, LightNode, reader_for

INTAKE = Intake(PREFIX)


def data(node: LightNode, payload: bytes, stream: str = "batch") -> DataMessage:
    parsed = INTAKE.parse(f"{node.topics.base}/data/{stream}", payload)
    assert isinstance(parsed, DataMessage), parsed
    return parsed


def status(node: LightNode, payload: bytes, *, retained: bool = False) -> StatusMessage:
    parsed = INTAKE.parse(node.topics.status, payload, retained=retained)
    assert isinstance(parsed, StatusMessage), parsed
    return parsed


def query(
    opener: Callable[[], Store], sql: str, params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    reader = reader_for(opener)
    try:
        return reader.db.query(sql, params)  # type: ignore[no-any-return]
    finally:
        reader.close()


def test_each_key_is_stored_once_and_counted(open_store: Callable[[], Store]) -> None:
    node = LightNode("n1")
    store = open_store()
    try:
        first = store.write([data(node, node.batch(list(range(1, 101))))], [], time.time())
        again = store.write(
            [data(node, node.batch(list(range(51, 151)))), data(node, node.envelope(7), "aq-1")],
            [],
            time.time(),
        )
    finally:
        store.close()
    assert (first.stored, first.duplicates) == (100, 0)
    assert (again.events, again.stored, again.duplicates) == (101, 50, 51)
    reader = reader_for(open_store)
    try:
        assert reader.count("n1") == 150
        assert reader.seqs("n1", node.epoch) == list(range(1, 151))
    finally:
        reader.close()
    migrations = query(open_store, "SELECT name FROM schema_migrations ORDER BY name")
    assert [m["name"] for m in migrations] == ["0001_tables", "0002_views"]


def test_kinds_land_in_their_tables_and_views(open_store: Callable[[], Store]) -> None:
    node = LightNode("cam-node", district="d2")
    hour = time.time() // 3600 * 3600 - 3600
    iso = LightNode.iso
    envelopes = [
        node.envelope(1),
        node.envelope(
            2,
            "count",
            {
                "camera": "gate",
                "zone": "road",
                "from": iso(hour),
                "to": iso(hour + 60),
                "interval_s": 60,
                "objects": {"car": 4, "person": 1},
                "entries": {"car": 3},
            },
        ),
        node.envelope(
            3,
            "count",
            {
                "camera": "gate",
                "line": "l1",
                "from": iso(hour + 60),
                "to": iso(hour + 120),
                "interval_s": 60,
                "crossings": {"in": {"car": 2}, "out": {"car": 5}},
            },
        ),
        node.envelope(
            4,
            "detection",
            {
                "camera": "gate",
                "zone": "road",
                "track_id": 9,
                "label": "car",
                "class_id": 2,
                "score": 0.9,
                "box": [1, 2, 3, 4],
                "frame_size": [640, 480],
            },
        ),
        node.envelope(
            5,
            "reading",
            {
                "sensor": "aqi",
                "quantity": "vn_aqi_hourly",
                "value": 87,
                "unit": "1",
                "quality": "ok",
                "category": "trung_binh",
                "color": [255, 255, 0],
                "label_vi": "Trung bình",
                "dominant": "pm2_5",
                "sub_indices": {"pm2_5": 87},
                "inputs": {"pm2_5": 39.8},
                "period": {"from": "2026-11-27T01:00:00.000Z", "to": "2026-11-27T02:00:00.000Z"},
            },
        ),
        node.envelope(
            6,
            "health",
            {
                "verdict": "degraded",
                "reasons": [
                    {"component": "sensor:aq-1", "code": "sensor_failing", "severity": "degraded"}
                ],
                "host": {"cpu_percent": 12.5},
            },
        ),
        node.envelope(
            7,
            "camera",
            {"camera": "gate", "event": "state", "state": "offline", "detail": "timeout"},
        ),
    ]
    from edge_agent.contract import encode_batch

    store = open_store()
    try:
        store.write([data(node, encode_batch(envelopes))], [], time.time())
    finally:
        store.close()
    readings = query(open_store, "SELECT quantity, value, unit FROM readings ORDER BY seq")
    assert readings == [
        {"quantity": "pm2_5", "value": 1.0, "unit": "ug/m3"},
        {"quantity": "vn_aqi_hourly", "value": 87.0, "unit": "1"},
    ]
    kinds = query(open_store, "SELECT kind FROM events ORDER BY seq")
    assert [k["kind"] for k in kinds] == ["count", "count", "detection", "health", "camera"]
    hourly = query(
        open_store,
        "SELECT place, direction, label, objects, entries, crossings FROM hourly_counts"
        " ORDER BY place, direction, label",
    )
    assert hourly == [
        {
            "place": "l1",
            "direction": "in",
            "label": "car",
            "objects": None,
            "entries": None,
            "crossings": 2,
        },
        {
            "place": "l1",
            "direction": "out",
            "label": "car",
            "objects": None,
            "entries": None,
            "crossings": 5,
        },
        {
            "place": "road",
            "direction": "",
            "label": "car",
            "objects": 4,
            "entries": 3,
            "crossings": None,
        },
        {
            "place": "road",
            "direction": "",
            "label": "person",
            "objects": 1,
            "entries": None,
            "crossings": None,
        },
    ]
    latest = query(
        open_store, "SELECT sensor, quantity, value FROM latest_readings ORDER BY sensor"
    )
    assert [r["quantity"] for r in latest] == ["pm2_5", "vn_aqi_hourly"]
    detections = query(open_store, "SELECT camera, label FROM detections")
    assert detections == [{"camera": "gate", "label": "car"}]
    assert query(open_store, "SELECT camera, state FROM camera_events") == [
        {"camera": "gate", "state": "offline"}
    ]
    assert len(query(open_store, "SELECT * FROM all_events")) == 7
    reader = reader_for(open_store)
    try:
        (row,) = reader.fleet()
        detail = reader.node("cam-node")
    finally:
        reader.close()
    assert (row.group_code, row.aqi, row.verdict, row.state) == ("d2", 87.0, "degraded", "unknown")
    assert detail is not None
    assert detail.cameras[0]["state"] == "offline"
    assert detail.cameras[0]["counted"] == {"car": 10, "person": 0}


def test_status_history_fleet_state_and_area(open_store: Callable[[], Store]) -> None:
    a = LightNode("node-a")
    b = LightNode("node-b", district="old-district")
    area = {"code": "26734", "name": "Phường Ba Đình"}
    birth_a = a.status("online", pending_rows=120, last_seq=7, area=area)
    store = open_store()
    try:
        store.write([], [status(a, birth_a), status(b, b.status("online"))], time.time())
        # The same retained birth on a new session is not a new state.
        store.write([], [status(a, birth_a, retained=True)], time.time())
        will = b.status("offline", reason="will")
        store.write([], [status(b, will)], time.time())
    finally:
        store.close()
    reader = reader_for(open_store)
    try:
        fleet = {n.node: n for n in reader.fleet()}
    finally:
        reader.close()
    assert fleet["node-a"].state == "online" and fleet["node-a"].pending_rows == 120
    assert (fleet["node-a"].group_code, fleet["node-a"].group_name) == ("26734", "Phường Ba Đình")
    assert fleet["node-b"].state == "offline"
    assert (fleet["node-b"].group_code, fleet["node-b"].group_name) == ("old-district",) * 2
    history = query(open_store, "SELECT node, state, reason FROM node_status ORDER BY id")
    assert history == [
        {"node": "node-a", "state": "online", "reason": ""},
        {"node": "node-b", "state": "online", "reason": ""},
        {"node": "node-b", "state": "offline", "reason": "will"},
    ]
    offline = query(open_store, "SELECT node FROM nodes_offline")
    assert offline == [{"node": "node-b"}]


def test_holes_open_after_the_timeout_apart_from_declared_gaps(
    open_store: Callable[[], Store],
) -> None:
    node = LightNode("n1")
    present = [s for s in range(1, 101) if not 40 <= s <= 45 and not 60 <= s <= 62]
    gap = node.envelope(
        101,
        "gap",
        {"reason": "quota", "priority": "reading", "first_seq": 60, "last_seq": 62, "count": 3},
    )
    t0 = time.time()
    store = open_store()
    try:
        store.write([data(node, node.batch(present)), data(node, gap, "gap")], [], t0)
        noticed = store.scan_holes(t0, 60.0)
        early = store.scan_holes(t0 + 30, 60.0)
        late = store.scan_holes(t0 + 61, 60.0)
    finally:
        store.close()
    assert (noticed.open, noticed.opened) == (0, 0)  # pending, not yet a hole
    assert (early.open, late.opened, late.open) == (0, 1, 1)
    reader = reader_for(open_store)
    try:
        holes = reader.holes("n1")
        gaps = reader.declared_gaps("n1")
        (sequence,) = reader.node("n1").sequences  # type: ignore[union-attr]
    finally:
        reader.close()
    assert [(h["first_seq"], h["last_seq"]) for h in holes] == [(40, 45)]
    assert [(g["reason"], g["first_seq"], g["last_seq"]) for g in gaps] == [("quota", 60, 62)]
    assert (sequence["max_seq"], sequence["contiguous_seq"]) == (101, 39)

    store = open_store()
    try:
        store.write([data(node, node.batch([40, 41, 42]))], [], t0 + 70)
        partly = store.scan_holes(t0 + 70, 60.0)
        store.write([data(node, node.batch([43, 44, 45]))], [], t0 + 80)
        filled = store.scan_holes(t0 + 80, 60.0)
    finally:
        store.close()
    assert (partly.closed, partly.open) == (1, 1)  # 40-45 closed, 43-45 still open
    assert (filled.closed, filled.open) == (1, 0)
    closed = query(
        open_store,
        "SELECT first_seq, last_seq, state, closed_by FROM holes ORDER BY first_seq, id",
    )
    assert closed == [
        {"first_seq": 40, "last_seq": 45, "state": "closed", "closed_by": "arrived"},
        {"first_seq": 43, "last_seq": 45, "state": "closed", "closed_by": "arrived"},
    ]
    reader = reader_for(open_store)
    try:
        (sequence,) = reader.node("n1").sequences  # type: ignore[union-attr]
    finally:
        reader.close()
    assert sequence["contiguous_seq"] == 101


def test_a_new_epoch_is_a_new_sequence_and_a_late_declaration_closes_a_hole(
    open_store: Callable[[], Store],
) -> None:
    old = LightNode("n1", epoch="e-old")
    new = LightNode("n1", epoch="e-new")
    t0 = time.time()
    store = open_store()
    try:
        store.write([data(old, old.batch([1, 2, 3, 6]))], [], t0)
        store.write([data(new, new.batch([1, 2]))], [], t0)
        assert store.scan_holes(t0, 0.0).open == 1  # 4-5 of the old epoch only
        gap = new.envelope(
            3,
            "gap",
            {
                "reason": "corrupt",
                "first_seq": None,
                "last_seq": 6,
                "count": None,
                "previous_epoch": "e-old",
                "previous_last_seq": 6,
            },
        )
        store.write([data(new, gap, "gap")], [], t0 + 1)
        report = store.scan_holes(t0 + 1, 0.0)
    finally:
        store.close()
    assert (report.closed, report.open) == (1, 0)
    assert query(open_store, "SELECT closed_by FROM holes") == [{"closed_by": "declared"}]


def test_a_new_epoch_that_continues_the_seqs_has_no_hole_below_its_start(
    open_store: Callable[[], Store],
) -> None:
    # The node lost its WAL tail: the new epoch opens at seq 10,001 (above every seq it
    # reserved) with the alert and the lost gap, which bounds the old epoch's missing seqs.
    old = LightNode("n1", epoch="e-old")
    new = LightNode("n1", epoch="e-new")
    alert = new.envelope(
        10_001,
        "alert",
        {
            "alert": "outbox_new_epoch",
            "severity": "error",
            "cause": "wal_tail",
            "epoch": "e-new",
            "previous_epoch": "e-old",
            "previous_last_seq": 270,
        },
    )
    gap = new.envelope(
        10_002,
        "gap",
        {
            "reason": "lost",
            "cause": "wal_tail",
            "previous_epoch": "e-old",
            "previous_last_seq": 270,
            "first_seq": 271,
            "last_seq": 324,
            "count": None,
        },
    )
    t0 = time.time()
    store = open_store()
    try:
        store.write([data(old, old.batch(list(range(1, 301))))], [], t0)
        # The new epoch's readings arrive before its alerts (another receiver had them).
        store.write([data(new, new.batch([10_003, 10_004, 10_006]))], [], t0)
        before = store.scan_holes(t0, 0.0)
        store.write([data(new, alert, "alert"), data(new, gap, "gap")], [], t0 + 1)
        after = store.scan_holes(t0 + 1, 0.0)
    finally:
        store.close()
    assert before.open == 2  # 1..10,002 and 10,005 of the new epoch, for now
    assert (after.open, after.closed) == (1, 1)
    reader = reader_for(open_store)
    try:
        holes = reader.holes("n1")
    finally:
        reader.close()
    # Old seqs 301-324 may be missing and are declared; only 10,005 of the new epoch is a hole.
    assert [(h["epoch"], h["first_seq"], h["last_seq"]) for h in holes] == [
        ("e-new", 10_005, 10_005)
    ]


def test_ioc_nodes_prints_the_fleet_as_a_table_and_as_json(tmp_path: Path) -> None:
    from edge_agent.ioc.sqlite_store import SqliteStore

    path = tmp_path / "ioc.sqlite3"
    a = LightNode("node-a")
    store = SqliteStore(path, synchronous="NORMAL")
    try:
        area = {"code": "00004", "name": "Phường Ba Đình"}
        store.write(
            [data(a, a.batch([1, 2, 4]))],
            [status(a, a.status("online", pending_rows=12, area=area))],
            time.time(),
        )
        store.scan_holes(time.time(), 0.0)
    finally:
        store.close()

    def nodes(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            agent_command("ioc", "nodes", *args),
            env=agent_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    text = nodes("--db", str(path))
    assert text.returncode == 0, text.stderr
    header, row = text.stdout.splitlines()
    assert header.split()[:3] == ["NODE", "AREA", "STATE"]
    assert row.startswith("node-a") and "Phường Ba Đình (00004)" in row and "online" in row
    (entry,) = json.loads(nodes("--db", str(path), "--json").stdout)
    assert (entry["pending_rows"], entry["open_holes"], entry["state"]) == (12, 1, "online")
    missing = nodes("--db", str(tmp_path / "none.sqlite3"))
    assert missing.returncode == 1 and "ioc receive" in missing.stderr
