"""A seq never goes back: a store that lost committed rows, or was reset, starts a new epoch
and says so with an alert and a gap naming the previous epoch; no (epoch, seq) key is ever
used twice for different events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.contract import Kind
from tests.conftest import REPO, agent_env
from tests.outbox.helpers import drop_last_commits, make_outbox, rows_in
from tests.sync.schema import validate


def _run_child(path: Path, settings: dict[str, Any], rounds: int) -> tuple[str, dict[int, int]]:
    """Run `wal_child` until it committed `rounds` rounds, then SIGKILL it.

    Returns its epoch and, per promised seq, the round that carried it."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.outbox.wal_child",
            str(path),
            json.dumps(settings),
            str(rounds),
        ],
        cwd=REPO,
        env=agent_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    epoch = ""
    promised: dict[int, int] = {}
    try:
        for line in proc.stdout:
            tag, *values = line.split()
            if tag == "E":
                epoch = values[0]
            elif tag == "P":
                promised.update((int(v), len(promised) // 3) for v in values)
            elif tag == "DONE":
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert epoch and len(promised) == 3 * rounds
    return epoch, promised


def _envelopes(path: Path) -> list[dict[str, Any]]:
    return [envelope for _, _, envelope in rows_in(path).values()]


@pytest.mark.asyncio
async def test_a_lost_wal_tail_starts_a_new_epoch_and_no_key_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    settings = {"synchronous": "NORMAL", "disk_reserve_bytes": 0}
    old_epoch, promised = _run_child(path, settings, rounds=60)
    drop_last_commits(path.with_name(path.name + "-wal"), 20)
    kept = set(rows_in(path))
    lost = sorted(set(promised) - kept)
    assert lost, "cutting the WAL lost nothing: the test proves nothing"
    old_keys = {(old_epoch, seq) for seq in promised}

    async with make_outbox(path, **settings) as outbox:
        new = [
            await outbox.put(Kind.DETECTION, {"run": "second", "i": i}, stream="cam")
            for i in range(40)
        ]
        epoch = outbox.epoch
    envelopes = {(e["epoch"], e["seq"]): e for e in _envelopes(path)}
    fresh = [e for e in envelopes.values() if e["data"].get("run") == "second"]
    assert sorted(e["seq"] for e in fresh) == new
    # The receiver dedupes on (node, epoch, seq): no new event may carry an old key.
    assert not {(e["epoch"], e["seq"]) for e in fresh} & old_keys
    # Nor may the seq go back, even across the epoch change.
    assert min(new) > max(promised)
    assert epoch != old_epoch

    reports = [e for e in envelopes.values() if e["epoch"] == epoch and e["kind"] != "detection"]
    (alert,) = [e["data"] for e in reports if e["kind"] == "alert"]
    (gap,) = [e["data"] for e in reports if e["kind"] == "gap"]
    assert alert["previous_epoch"] == gap["previous_epoch"] == old_epoch
    assert gap["reason"] == "lost"
    assert gap["first_seq"] <= lost[0] and lost[-1] <= gap["last_seq"]
    assert gap["previous_last_seq"] == max(kept & set(promised))


def _zero_length(path: Path) -> None:
    path.write_bytes(b"")


def _garbage_wal_over_empty_main(path: Path) -> None:
    path.write_bytes(b"")
    path.with_name(path.name + "-wal").write_bytes(os.urandom(64 * 1024))


def _missing(path: Path) -> None:
    path.unlink()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "damage", [_zero_length, _garbage_wal_over_empty_main, _missing], ids=lambda f: f.__name__
)
async def test_a_reset_store_starts_a_new_epoch_with_an_alert_and_a_gap(
    tmp_path: Path, damage: Any
) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with make_outbox(path) as outbox:
        old_epoch = outbox.epoch
        last = 0
        for i in range(50):
            last = await outbox.put(Kind.DETECTION, {"i": i}, stream="cam")
    damage(path)

    async with make_outbox(path) as outbox:
        assert outbox.epoch != old_epoch
        rows = await outbox.claim(10)
        assert [r.kind for r in rows] == ["alert", "gap"]
        alert, gap = (json.loads(r.payload)["data"] for r in rows)
        assert alert["previous_epoch"] == gap["previous_epoch"] == old_epoch
        assert gap["reason"] == "lost"
        assert gap["last_seq"] >= last
        assert all(r.seq > last for r in rows)
        for row in rows:  # what the IOC receives follows the published contract
            validate("envelope", json.loads(row.payload))
        assert await outbox.put(Kind.DETECTION, {"after": True}, stream="cam") > last


@pytest.mark.asyncio
async def test_an_unclean_end_before_a_reboot_under_normal_opens_a_new_epoch(
    tmp_path: Path,
) -> None:
    """NORMAL leaves the WAL's tail to the kernel: after a power cut nothing proves it
    reached the device, so the next boot cannot continue the epoch."""
    path = tmp_path / "outbox.sqlite3"
    settings = {"synchronous": "NORMAL", "disk_reserve_bytes": 0}
    old_epoch, promised = _run_child(path, settings, rounds=10)
    async with make_outbox(path, boot="the-next-boot", **settings) as outbox:
        assert outbox.epoch != old_epoch
        assert outbox.stats()["epoch_change"] == "power_cut"
        assert outbox.health.reason is not None and outbox.health.reason.code == "new_epoch"
        epoch = outbox.epoch
        rows = [r for r in await outbox.claim(100) if json.loads(r.payload)["epoch"] == epoch]
    alert, gap = (json.loads(r.payload)["data"] for r in rows)
    assert alert["alert"] == "outbox_new_epoch" and alert["cause"] == "power_cut"
    assert gap["previous_last_seq"] == max(promised)
    # Which of the seqs after it were used is unknown: the gap bounds them by the ledger.
    assert gap["first_seq"] == max(promised) + 1 and gap["last_seq"] >= gap["first_seq"]
    assert rows[0].seq > gap["last_seq"]


@pytest.mark.asyncio
async def test_full_trusts_its_fsyncs_across_a_reboot(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    old_epoch, promised = _run_child(path, {"synchronous": "FULL"}, rounds=10)
    async with make_outbox(path, boot="the-next-boot") as outbox:
        assert outbox.epoch == old_epoch
        assert await outbox.put(Kind.DETECTION, {}, stream="cam") == max(promised) + 1


@pytest.mark.asyncio
@pytest.mark.parametrize("boot", [None, "the-next-boot"], ids=["same_boot", "after_reboot"])
async def test_a_clean_close_or_a_crash_in_the_same_boot_keeps_the_epoch(
    tmp_path: Path, boot: str | None
) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with make_outbox(path, synchronous="NORMAL") as outbox:
        epoch = outbox.epoch
        last = max(
            await outbox.put_many([(Kind.READING, {"i": i}, "s", None, None) for i in range(9)])
        )
    async with make_outbox(path, synchronous="NORMAL", boot=boot) as outbox:
        assert outbox.epoch == epoch
        assert outbox.stats()["epoch_change"] is None
        assert await outbox.put(Kind.READING, {}, stream="s") == last + 1
    # A crash (no clean close) in the same boot: the kernel kept every write.
    crashed_epoch, promised = _run_child(tmp_path / "b.sqlite3", {"synchronous": "NORMAL"}, 5)
    async with make_outbox(tmp_path / "b.sqlite3", synchronous="NORMAL") as outbox:
        assert outbox.epoch == crashed_epoch
        assert await outbox.put(Kind.READING, {}, stream="s") == max(promised) + 1


@pytest.mark.asyncio
async def test_a_missing_seq_ledger_is_no_proof(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with make_outbox(path) as outbox:
        epoch = outbox.epoch
        last = await outbox.put(Kind.DETECTION, {}, stream="cam")
    path.with_name(path.name + ".seqs").unlink()
    async with make_outbox(path) as outbox:
        assert outbox.epoch != epoch
        rows = await outbox.claim(10)
    gap = json.loads(rows[1].payload)["data"]
    assert (gap["reason"], gap["cause"], gap["previous_epoch"]) == ("lost", "ledger_missing", epoch)
    assert gap["previous_last_seq"] == last


@pytest.mark.asyncio
async def test_a_file_from_before_the_ledger_keeps_its_epoch_and_rows(tmp_path: Path) -> None:
    """An outbox written by the previous version (one AUTOINCREMENT row per event, no
    ledger) is migrated in place: same epoch, every pending row, seqs continuing."""
    from edge_agent.outbox.schema import MIGRATIONS, FileSettings, connect, migrate

    path = tmp_path / "outbox.sqlite3"
    conn = connect(path, FileSettings())
    migrate(conn, MIGRATIONS[:1])
    epoch = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
    for seq in (1, 2, 3):
        body = json.dumps(
            {
                "v": 1,
                "node": "node-1",
                "epoch": epoch,
                "seq": seq,
                "ts": "2026-01-01T00:00:00.000Z",
                "kind": "reading",
                "data": {"n": seq},
            },
            separators=(",", ":"),
        )
        conn.execute(
            "INSERT INTO events (priority, ts, created, kind, stream, payload)"
            " VALUES (2, 0, 0, 'reading', 's', ?)",
            (body.encode(),),
        )
    conn.execute("DELETE FROM events WHERE seq = 1")  # acked before the upgrade
    conn.execute("INSERT INTO totals VALUES ('pending_rows', 2), ('pending_bytes', 0)")
    conn.close()
    async with make_outbox(path) as outbox:
        assert outbox.epoch == epoch
        assert [r.seq for r in await outbox.claim(10)] == [2, 3]
        assert await outbox.put(Kind.READING, {}, stream="s") == 4
