"""A full disk and a corrupt database during traffic, seen from the receiver: whatever the
node could not keep arrives as a declared gap; nothing goes missing silently."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Node, Receiver, account, report, scale, settle, wait_until
from tests.faults.proxy import FaultProxy
from tests.outbox.helpers import drop_last_commits

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(scale(900, 7200))]

FS_BYTES = 8 * 1024 * 1024


@contextlib.contextmanager
def small_filesystem(directory: Path) -> Iterator[bool]:
    """An 8 MiB tmpfs at `directory`; False where mounting is not allowed."""
    directory.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        yield False
        return
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_a_full_disk_during_an_outage_arrives_as_declared_gaps(
    make_node: Callable[..., Node], receiver: Receiver, proxy: FaultProxy, tmp_path: Path
) -> None:
    node = make_node()
    with small_filesystem(node.state_dir) as mounted:
        # A small ballast, so the wall comes soon at this rate; where mounting is not
        # allowed, a hard cap on the file is the same wall for SQLite.
        outbox = "[outbox]\ndisk_reserve_bytes = 262144\n"
        if not mounted:
            outbox += "max_file_bytes = 2097152\n"
        node.config.write_text(node.config.read_text().replace("[outbox]\n", outbox))
        node.start()
        wait_until(lambda: node.committed() > 50, "traffic")
        proxy.cut()  # the backlog has nowhere to go
        if mounted:
            filler = node.state_dir / "filler"
            free = shutil.disk_usage(node.state_dir).free
            filler.write_bytes(b"\0" * max(0, free - 1024 * 1024))
        wait_until(lambda: int(node.stats().get("dropped_disk_full") or 0) > 0, "disk full")
        dropped = int(node.stats()["dropped_disk_full"])
        if mounted:
            filler.unlink()
        proxy.heal()
        acc = settle(node, receiver)
    receiver.stop()
    gaps = [g for g in receiver.gaps(node.name) if g.get("reason") == "disk_full"]
    assert gaps, "the rows dropped for room arrive as disk_full gaps"
    assert acc.declared >= 1
    report(
        "disk-full",
        tmpfs=mounted,
        committed=acc.sent,
        stored=acc.stored,
        dropped_disk_full=dropped,
        declared_lost=acc.declared,
        missing=0,
    )


def corrupt_pages(path: Path, *, seed: int = 7) -> None:
    """Random bytes over a few pages past the header: what a failing card does."""
    size = path.stat().st_size
    rand = random.Random(seed)
    with path.open("r+b") as handle:
        for _ in range(8):
            at = rand.randrange(4096, max(size - 4096, 4097))
            handle.seek(at)
            handle.write(rand.randbytes(4096))
        handle.flush()
        os.fsync(handle.fileno())


def test_a_database_corrupted_during_traffic_is_declared_and_a_new_epoch_goes_on(
    make_node: Callable[..., Node], receiver: Receiver, proxy: FaultProxy
) -> None:
    node = make_node()
    node.start()
    wait_until(lambda: node.committed() > 200, "traffic")
    proxy.cut()  # rows pending in the old file when it breaks
    before = node.committed()
    wait_until(lambda: node.committed() > before + 300, "a backlog")
    old_epoch = str(node.stats()["epoch"])
    # A power cut, and the card damaged its pages: the agent is killed, everything the WAL
    # held is checkpointed into the main file (so the damage is in pages SQLite will read,
    # not in a WAL tail it would discard), then pages are overwritten. Damage found while
    # running (the agent exits and the start-up check quarantines) is tests/outbox's.
    node.kill()
    old_last = int(node.stats()["last_seq"])
    with contextlib.closing(sqlite3.connect(node.outbox)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt_pages(node.outbox)
    node.start()
    wait_until(lambda: node.stats().get("epoch") not in (None, old_epoch), "a new epoch")
    proxy.heal()
    acc = settle(node, receiver)
    receiver.stop()
    corrupt = [g for g in receiver.gaps(node.name) if g.get("reason") == "corrupt"]
    assert corrupt and corrupt[0].get("previous_epoch") == old_epoch
    quarantined = list(node.state_dir.glob("outbox.sqlite3.corrupt-*"))
    assert quarantined, "the damaged file is kept aside, never deleted"
    # The old epoch as the test saw it before the damage: every seq stored or declared.
    acc = account(node, receiver, known={old_epoch: old_last})
    assert acc.ok, acc
    assert acc.declared > 0, "the backlog held in the damaged file is declared lost"
    report(
        "corrupt-database",
        epochs=len(acc.committed),
        committed=acc.sent,
        stored=acc.stored,
        declared_lost=acc.declared,
        missing=0,
        quarantined=len(quarantined),
    )


def test_a_lost_wal_tail_after_a_kill_reaches_the_receiver_as_a_new_epoch_and_a_gap(
    make_node: Callable[..., Node], receiver: Receiver, proxy: FaultProxy
) -> None:
    """What a power cut does to a WAL whose last frames never reached the disk: the agent is
    killed, the last commits are cut off its WAL, and it starts again. The seqs it used
    must never come back with other content: the receiver gets every new event under a new
    epoch, and a gap for the old epoch's seqs that may be lost."""
    node = make_node()
    node.start()
    wait_until(lambda: node.committed() > 200, "traffic")
    proxy.cut()  # the last rows stay in the WAL, unacknowledged
    before = node.committed()
    wait_until(lambda: node.committed() > before + 300, "a backlog")
    old_epoch = str(node.stats()["epoch"])
    node.kill()
    old_last = int(node.stats()["last_seq"])
    drop_last_commits(node.outbox.with_name(node.outbox.name + "-wal"), 10)
    kept = int(node.stats()["last_seq"])
    assert kept < old_last, "cutting the WAL lost nothing: the test proves nothing"
    node.start()
    wait_until(lambda: node.stats().get("epoch") not in (None, old_epoch), "a new epoch")
    proxy.heal()
    settle(node, receiver)
    receiver.stop()
    new_epoch = str(node.stats()["epoch"])
    (lost,) = [g for g in receiver.gaps(node.name) if g.get("reason") == "lost"]
    assert (lost["previous_epoch"], lost["cause"], lost["epoch"]) == (
        old_epoch,
        "wal_tail",
        new_epoch,
    )
    assert lost["previous_last_seq"] == kept
    assert lost["first_seq"] <= kept + 1 and lost["last_seq"] >= old_last
    # Every new event arrived under the new epoch, above every seq the old one used.
    new_keys = receiver.keys(node.name)[new_epoch]
    assert min(new_keys) > old_last
    # And every seq of the old epoch the test saw committed is stored or declared.
    acc = account(node, receiver, known={old_epoch: old_last})
    assert acc.ok, acc
    report(
        "lost-wal-tail",
        epochs=len(acc.committed),
        committed=acc.sent,
        stored=acc.stored,
        declared_lost=acc.declared,
        missing=0,
        cut_seqs=old_last - kept,
    )
