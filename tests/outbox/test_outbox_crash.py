"""SIGKILL at random points, with commit windows, ack windows and packed rows: every event
whose put() returned is still pending or was acked, an acked event stays only in a row
that still holds an unacked one (sent again: at-least-once), the seq never goes back, the
epoch never changes, and the file passes integrity_check after each kill."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, agent_env
from tests.outbox.helpers import integrity, rows_in, stored_rows

KILLS = 50


def _read_some(proc: subprocess.Popen[bytes], lines: int) -> bytes:
    """Read until `lines` newlines arrived (or the child ended); the rest stays in the pipe."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + 60
    while data.count(b"\n") < lines and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return data


def test_sigkill_loses_no_committed_row(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    rng = random.Random(20261127)
    promised: set[int] = set()
    acked: set[int] = set()
    epochs: set[str] = set()
    highest = 0
    for kill in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.outbox.crash_child", str(path), str(kill)],
            cwd=REPO,
            env=agent_env(),
            stdout=subprocess.PIPE,
        )
        output = _read_some(proc, rng.randint(2, 60))
        # A little more work after the last line we saw, so the kill lands mid-transaction too.
        time.sleep(rng.random() * 0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.stdout is not None
        output += proc.stdout.read()
        proc.stdout.close()
        assert proc.wait(timeout=30) == -signal.SIGKILL, output[-2000:]
        first_seq_this_run = None
        acked_now: set[int] = set()  # in this run: a restart forgets partial acks
        in_flight: dict[frozenset[int], int] = {}
        # A line cut short by the kill is no promise: only complete lines count.
        complete = output[: output.rfind(b"\n") + 1]
        for line in complete.decode().splitlines():
            tag, *values = line.split()
            seqs = frozenset() if tag == "E" else frozenset(int(v) for v in values)
            if tag == "E":
                epochs.add(values[0])
            elif tag == "P":
                first_seq_this_run = first_seq_this_run or min(seqs)
                promised.update(seqs)
            elif tag == "C":
                in_flight[seqs] = in_flight.get(seqs, 0) + 1
            elif tag == "A":
                acked.update(seqs)
                acked_now.update(seqs)
                in_flight[seqs] -= 1
        acking = {s for seqs, n in in_flight.items() if n > 0 for s in seqs}
        if first_seq_this_run is not None:
            # seq never goes back across crashes.
            assert first_seq_this_run > highest
        assert integrity(path) == "ok", f"after kill {kill}"
        rows = rows_in(path)
        ranges = stored_rows(path)
        for seq in acked & set(rows):
            first = max(s for s in ranges if s <= seq)
            row = set(range(first, ranges[first] + 1))
            assert row - acked_now, f"after kill {kill}: acked {seq} stayed in an acked row"
        # The acks in flight at the kill may or may not have committed: those were acked.
        missing = promised - acked - set(rows)
        gaps = [env["data"] for _, kind, env in rows.values() if kind in ("gap", "alert")]
        assert missing <= acking, (
            f"after kill {kill}: rows lost: {sorted(missing - acking)[:10]}; gaps {gaps[:5]};"
            f" output ends {output.decode(errors='replace')[-1500:]}"
        )
        acked |= missing
        highest = max([highest, *promised, *rows])
    assert len(epochs) == 1
    assert len(promised) > KILLS
    assert acked
