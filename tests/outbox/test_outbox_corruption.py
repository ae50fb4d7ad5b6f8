"""A damaged outbox file is moved aside (never deleted), a fresh one starts with a new epoch,
and the loss is queued as an alert and a gap; the outbox keeps working."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from pathlib import Path

import pytest

from edge_agent.contract import Kind
from edge_agent.health import State
from tests.outbox.helpers import integrity, make_outbox, quarantined_files
from tests.sync.schema import validate

PAGE = 4096


async def _filled(path: Path) -> tuple[str, int]:
    async with make_outbox(path) as outbox:
        seqs = await asyncio.gather(
            *(outbox.put(Kind.READING, {"i": i, "pad": "p" * 200}, stream="s") for i in range(300))
        )
        last = max(seqs)
        epoch = outbox.epoch
    # Closing the last connection checkpoints the WAL into the main file.
    assert not path.with_name(path.name + "-wal").exists()
    return epoch, last


def _truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _scribble(path: Path) -> None:
    rng = random.Random(7)
    data = bytearray(path.read_bytes())
    # Random bytes over the header of every page after the first: b-tree pages become
    # unreadable, which quick_check must notice wherever they sit.
    for start in range(PAGE, len(data), PAGE):
        data[start : start + 64] = rng.randbytes(64)
    path.write_bytes(bytes(data))


def _not_sqlite(path: Path) -> None:
    path.write_text("these are not the rows you are looking for\n" * 200)


def _foreign_sqlite(path: Path) -> None:
    # A sound SQLite file that some other program (or an older layout) left in our place.
    path.unlink()
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
        "INSERT INTO meta VALUES ('epoch', 'foreign');"
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, payload BLOB);"
    )
    conn.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "damage", [_truncate, _scribble, _not_sqlite, _foreign_sqlite], ids=lambda f: f.__name__
)
async def test_corrupt_file_is_quarantined_and_reported(tmp_path: Path, damage: object) -> None:
    path = tmp_path / "outbox.sqlite3"
    old_epoch, last = await _filled(path)
    assert callable(damage)
    damage(path)
    damaged = path.read_bytes()

    async with make_outbox(path) as outbox:
        assert outbox.epoch != old_epoch
        moved = quarantined_files(tmp_path)
        assert [p.name for p in moved] == [outbox.stats()["quarantined_file"]]
        assert moved[0].read_bytes() == damaged  # kept byte for byte, never deleted
        assert outbox.health.state is State.OK
        assert "corrupt" in outbox.health.last_error
        assert outbox.health.counters["quarantined"] == 1

        rows = await outbox.claim(10)
        assert [r.kind for r in rows] == ["alert", "gap"]
        alert, gap = (json.loads(r.payload)["data"] for r in rows)
        assert alert["alert"] == "outbox_corrupt"
        assert alert["quarantined_file"] == moved[0].name
        assert gap["reason"] == "corrupt"
        assert json.loads(rows[0].payload)["epoch"] == outbox.epoch
        for row in rows:  # what the IOC receives follows the published contract
            validate("envelope", json.loads(row.payload))

        # And it simply goes on working, its seqs above every seq the moved file used, so
        # (node, seq) alone stays unique too.
        assert rows[0].seq > last
        seq = await outbox.put(Kind.READING, {"after": True}, stream="s")
        assert seq == rows[1].seq + 1
    assert integrity(path) == "ok"


@pytest.mark.asyncio
async def test_salvaged_facts_name_the_old_epoch(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    old_epoch, last = await _filled(path)
    data = bytearray(path.read_bytes())
    # Damage only the last page: meta and counters stay readable for the report.
    data[-PAGE:] = b"\xff" * PAGE
    path.write_bytes(bytes(data))
    async with make_outbox(path) as outbox:
        rows = await outbox.claim(10)
        assert outbox.stats()["dropped_corrupt"] == 300
    alert = json.loads(rows[0].payload)["data"]
    assert json.loads(rows[1].payload)["data"]["count"] == 300
    assert alert["previous_epoch"] == old_epoch
    assert alert["previous_last_seq"] == last


@pytest.mark.asyncio
async def test_healthy_file_is_not_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    epoch, last = await _filled(path)
    async with make_outbox(path) as outbox:
        assert outbox.epoch == epoch
        assert outbox.stats()["pending_rows"] == 300
        assert await outbox.put(Kind.READING, {}, stream="s") == last + 1
    assert not quarantined_files(tmp_path)
