"""Which events the publisher holds: handed out by `claim`, not yet acked or released.

A stored row carries one or more events (a read's readings share one). `claim` hands out
events one by one, so a row may be partly claimed; `ack` may cover part of a row. A row is
deleted only once every event in it is acked, and forgotten here once that delete is
committed. A restart forgets everything: a partly acked row is then sent again whole
(at-least-once; the IOC drops duplicates by key).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable

from edge_agent.contract import ContractError, Priority
from edge_agent.outbox.packing import unpack
from edge_agent.outbox.rows import OutboxRow, StoredRow

PRIORITIES = tuple(sorted(int(p) for p in Priority))
_FETCH = 64
_SELECT = (
    "SELECT seq, last_seq, ts, kind, stream, payload FROM events"
    " WHERE priority = ? AND seq >= ? ORDER BY seq"
)


class _Held:
    """A row with events out or acked; bit i of a mask stands for the event seq + i."""

    __slots__ = ("acked", "last_seq", "out", "priority", "size")

    def __init__(self, priority: int, last_seq: int, size: int) -> None:
        self.priority = priority
        self.last_seq = last_seq
        self.size = size
        self.out = 0
        self.acked = 0


class ClaimBook:
    """Held rows, and per priority a cursor: the seq below which every row is wholly held or
    gone, so that a claim resumes there instead of rescanning. Thread-safe: claims run on
    their own connection and thread, acks on the writer's, `release` on the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, _Held] = {}
        # Event seq -> row seq, for events out of rows that carry several.
        self._row_of: dict[int, int] = {}
        self._low = dict.fromkeys(PRIORITIES, 0)
        self._out = 0
        self._damaged: dict[int, StoredRow] = {}
        self._highest = dict.fromkeys(PRIORITIES, 0)  # the highest seq ever handed out

    def __len__(self) -> int:
        """Events handed out and not yet acked or released."""
        with self._lock:
            return self._out

    def claim(self, db: sqlite3.Connection, limit: int) -> list[OutboxRow]:
        out: list[OutboxRow] = []
        with self._lock:
            for priority in PRIORITIES:
                if len(out) >= limit:
                    break
                before = len(out)
                cursor = db.execute(_SELECT, (priority, self._low[priority]))
                try:
                    self._low[priority] = self._claim_class(cursor, priority, limit, out)
                finally:
                    cursor.close()
                if len(out) > before:
                    self._highest[priority] = max(self._highest[priority], out[-1].seq)
        return out

    def never_claimed(self, seq: int, priority: int) -> bool:
        """True when no claim of this run can have handed out `seq` of that class."""
        with self._lock:
            return seq > self._highest[priority]

    def _claim_class(
        self, cursor: sqlite3.Cursor, priority: int, limit: int, out: list[OutboxRow]
    ) -> int:
        """Hand out the class's unheld events until `limit`; returns the new cursor."""
        low = self._low[priority]
        advancing = True  # every row so far is wholly held: the cursor may move past it
        while len(out) < limit:
            batch = cursor.fetchmany(_FETCH)
            if not batch:
                break
            for seq, last_seq, ts, kind, stream, payload in batch:
                held = self._held.get(seq)
                full = (1 << (last_seq - seq + 1)) - 1
                if held is not None and held.out | held.acked == full:
                    low = last_seq + 1 if advancing else low
                    continue
                if len(out) >= limit or seq in self._damaged:
                    advancing = False
                    if len(out) >= limit:
                        break
                    continue
                try:
                    envelopes = unpack(payload, last_seq - seq + 1)
                except ContractError:
                    self._damaged[seq] = StoredRow(seq, last_seq, priority, len(payload), 0.0)
                    advancing = False
                    continue
                if held is None:
                    held = self._held[seq] = _Held(priority, last_seq, len(payload))
                taken = held.out | held.acked
                for i, payload_i in enumerate(envelopes):
                    if taken >> i & 1:
                        continue
                    if len(out) >= limit:
                        break
                    held.out |= 1 << i
                    self._out += 1
                    if i:
                        self._row_of[seq + i] = seq
                    out.append(OutboxRow(seq + i, priority, ts, kind, stream, payload_i))
                if advancing and held.out | held.acked == full:
                    low = last_seq + 1
                else:
                    advancing = False
        return low

    def release(self, seqs: Iterable[int] | None = None) -> None:
        with self._lock:
            if seqs is None:
                for key, held in list(self._held.items()):
                    held.out = 0
                    if not held.acked:
                        del self._held[key]
                self._row_of.clear()
                self._out = 0
                self._low = dict.fromkeys(PRIORITIES, 0)
                return
            for seq in seqs:
                key, row, bit = self._find(seq)
                if row is None or not row.out & bit:
                    continue
                row.out &= ~bit
                self._out -= 1
                self._row_of.pop(seq, None)
                self._low[row.priority] = min(self._low[row.priority], key)
                if not row.out and not row.acked:
                    del self._held[key]

    def ack(self, seqs: Iterable[int]) -> list[int]:
        """Mark events acked; returns the seqs of no held row (for `adopt`)."""
        unknown = []
        with self._lock:
            for seq in seqs:
                _, held, bit = self._find(seq)
                if held is None:
                    unknown.append(seq)
                    continue
                if held.out & bit:
                    held.out &= ~bit
                    self._out -= 1
                    self._row_of.pop(seq, None)
                held.acked |= bit
        return unknown

    def adopt(self, row: StoredRow, seqs: Iterable[int]) -> None:
        """Mark acked events of a row `ack` did not know (never claimed whole in this run)."""
        with self._lock:
            held = self._held.setdefault(row.seq, _Held(row.priority, row.last_seq, row.size))
            for seq in seqs:
                bit = 1 << (seq - row.seq)
                if held.out & bit:
                    held.out &= ~bit
                    self._out -= 1
                    self._row_of.pop(seq, None)
                held.acked |= bit

    def complete(self) -> list[StoredRow]:
        """Rows whose every event is acked: to delete in the writer's transaction."""
        with self._lock:
            return [
                StoredRow(key, h.last_seq, h.priority, h.size, 0.0)
                for key, h in self._held.items()
                if h.acked == (1 << (h.last_seq - key + 1)) - 1
            ]

    def forget(self, rows: Iterable[int]) -> None:
        """Rows whose delete is committed: gone for good."""
        with self._lock:
            for key in rows:
                self._drop(key)
                self._damaged.pop(key, None)

    def forget_range(self, priority: int, first: int, last: int) -> None:
        """Rows of a class with seqs `first` .. `last` were dropped (TTL, quota, full disk)."""
        with self._lock:
            for key in [
                k for k, h in self._held.items() if h.priority == priority and first <= k <= last
            ]:
                self._drop(key)
            for key in [
                k for k, r in self._damaged.items() if r.priority == priority and first <= k <= last
            ]:
                del self._damaged[key]

    def acked_in(self, row: int) -> int:
        """How many events of a held row are acked (delivered)."""
        with self._lock:
            held = self._held.get(row)
            return 0 if held is None else held.acked.bit_count()

    def damaged(self) -> list[StoredRow]:
        """Rows a claim could not unpack, for the writer to drop (counted as corrupt)."""
        with self._lock:
            return list(self._damaged.values())

    def _find(self, seq: int) -> tuple[int, _Held | None, int]:
        key = self._row_of.get(seq, seq)
        held = self._held.get(key)
        if held is None:
            return key, None, 0
        return key, held, 1 << (seq - key)

    def _drop(self, key: int) -> None:
        held = self._held.pop(key, None)
        if held is None:
            return
        out, i = held.out, 0
        while out:
            if out & 1:
                self._out -= 1
                self._row_of.pop(key + i, None)
            out >>= 1
            i += 1
