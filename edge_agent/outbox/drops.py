"""Rows the outbox drops on purpose, each drop counted by reason and reported as a `gap`:
TTL expiry, the quota, a full disk, and rows a claim found damaged.

Eviction (quota, full disk) takes the oldest rows of the lowest class first, whole rows at a
time; expiry takes, per class, the rows older than its TTL. A new drop of the same class for
the same reason extends the last gap report while no claim has handed it out yet, so a disk
that stays full for hours leaves one gap row per class, not one per commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.contract import Priority
from edge_agent.outbox.claims import PRIORITIES
from edge_agent.outbox.rows import Gap, StoredRow

if TYPE_CHECKING:
    from edge_agent.outbox.store import Store

# Room kept for the gap rows an eviction adds, so the quota holds after they are inserted.
GAP_RESERVE_BYTES = 512
EXPIRE_MAX_ROWS = 5000
_PAGE = 500
_OLDEST = (
    "SELECT seq, last_seq, priority, LENGTH(payload), created FROM events"
    " WHERE priority = ? AND seq > ? ORDER BY seq LIMIT ?"
)

Done = Callable[[int, int, int], bool]  # (events, bytes, gaps) planned so far -> enough?


@dataclass(frozen=True)
class _OpenGap:
    """A gap report inserted by this run that no claim has handed out yet."""

    seq: int
    ts: float
    data: dict[str, Any]
    size: int


class Drops:
    def __init__(self, store: Store) -> None:
        self.store = store
        # (class, first row seq, last row seq) dropped in the open transaction, for the
        # claim book once it is committed.
        self._dropped: list[tuple[int, int, int]] = []
        self._open: dict[tuple[str, int], _OpenGap] = {}
        self._saved: dict[tuple[str, int], _OpenGap] = {}

    def begin(self) -> None:
        self._saved = dict(self._open)

    def rollback(self) -> None:
        self._dropped.clear()
        self._open = self._saved

    def committed(self) -> None:
        dropped, self._dropped = self._dropped, []
        for priority, first, last in dropped:
            self.store.claims.forget_range(priority, first, last)

    # -- by reason ---------------------------------------------------------------------

    def expire(self, db: sqlite3.Connection) -> int:
        """Drop rows older than their class's TTL, at most EXPIRE_MAX_ROWS per class."""
        now = self.store.clock()
        gaps = []
        for priority in PRIORITIES:
            cutoff = now - self.store.config.ttl_of(priority)
            taken = []
            # Rows in seq order are in commit order: the first young one ends the run.
            for row in self._oldest(db, priority, limit=EXPIRE_MAX_ROWS):
                if row.created >= cutoff:
                    break
                taken.append(row)
            if taken:
                gaps.append(self._drop(db, priority, taken, "ttl"))
        self._report(db, gaps)
        return sum(g.count for g in gaps)

    def anything_expired(self, db: sqlite3.Connection) -> bool:
        now = self.store.clock()
        for priority in PRIORITIES:
            oldest = self._oldest(db, priority, limit=1)
            if oldest and oldest[0].created < now - self.store.config.ttl_of(priority):
                return True
        return False

    def enforce_quota(self, db: sqlite3.Connection) -> None:
        """Above max_bytes or max_rows, evict until the quota holds with the gaps added."""
        for _ in range(3):  # the gap rows themselves may tip it over again
            if not self._over(0, 0):
                return
            gaps = self._evict(
                db, "quota", lambda e, b, g: not self._over(e - g, b - g * GAP_RESERVE_BYTES)
            )
            if not gaps:
                return
            self._report(db, gaps)

    def evict_for_space(self, db: sqlite3.Connection, size: int) -> int:
        """Evict rows of `size` bytes or more, whose pages new rows can take on a full disk.

        Alerts and gap reports are never evicted for space: a dropped gap report would hide
        the loss it reports."""
        gaps = self._evict(db, "disk_full", lambda _e, b, _g: b >= size, spare=Priority.ALERT)
        self._report(db, gaps)
        return sum(g.count for g in gaps)

    def drop_damaged(self, db: sqlite3.Connection, rows: Sequence[StoredRow]) -> None:
        """Rows a claim could not unpack: they can never be sent, so they are reported."""
        gaps = []
        for row in rows:
            gaps.append(self._drop(db, row.priority, [row], "corrupt"))
        self._report(db, gaps)

    # -- shared ------------------------------------------------------------------------

    def _over(self, less_events: int, less_bytes: int) -> bool:
        totals, config = self.store.totals, self.store.config
        events = totals.get("pending_rows") - less_events
        size = totals.get("pending_bytes") - less_bytes
        return size > config.max_bytes or (config.max_rows is not None and events > config.max_rows)

    def _oldest(
        self, db: sqlite3.Connection, priority: int, *, after: int = -1, limit: int = _PAGE
    ) -> list[StoredRow]:
        return [StoredRow(*r) for r in db.execute(_OLDEST, (priority, after, limit))]

    def _evict(
        self, db: sqlite3.Connection, reason: str, done: Done, *, spare: int | None = None
    ) -> list[Gap]:
        """Plan the oldest rows of the lowest classes (but `spare`) until `done`, then drop
        them."""
        plan: list[tuple[int, list[StoredRow]]] = []
        events = size = 0
        for priority in reversed(PRIORITIES):
            if priority == spare:
                continue
            taken: list[StoredRow] = []
            after = -1
            while not done(events, size, len(plan) + bool(taken)):
                page = self._oldest(db, priority, after=after)
                for row in page:
                    if done(events, size, len(plan) + 1):
                        break
                    taken.append(row)
                    events += row.count
                    size += row.size
                if len(page) < _PAGE:
                    break
                after = page[-1].seq
            if taken:
                plan.append((priority, taken))
            if done(events, size, len(plan)):
                break
        return [self._drop(db, priority, rows, reason) for priority, rows in plan]

    def _drop(
        self, db: sqlite3.Connection, priority: int, rows: list[StoredRow], reason: str
    ) -> Gap:
        if len(rows) == 1:
            db.execute("DELETE FROM events WHERE seq = ?", (rows[0].seq,))
        else:  # the oldest rows of one class: exactly those of it in this seq range
            db.execute(
                "DELETE FROM events WHERE priority = ? AND seq BETWEEN ? AND ?",
                (priority, rows[0].seq, rows[-1].seq),
            )
        # Events of a partly acked row were delivered: not lost, so not in the gap's count.
        delivered = sum(self.store.claims.acked_in(r.seq) for r in rows)
        count = self.store.totals.removed(rows, f"dropped_{reason}", acked=delivered)
        self._dropped.append((priority, rows[0].seq, rows[-1].seq))
        return Gap(reason, priority, rows[0].seq, rows[-1].last_seq, count)

    def _report(self, db: sqlite3.Connection, gaps: Sequence[Gap]) -> None:
        """Queue a gap event per drop, or extend the class's unsent one."""
        for gap in gaps:
            if not gap.count:
                continue  # every event of those rows had been delivered
            key = (gap.reason, gap.priority)
            last = self._open.get(key)
            if last is not None and self._extend(db, key, last, gap):
                continue
            data: dict[str, Any] = {
                "reason": gap.reason,
                "priority": Priority(gap.priority).name.lower(),
                "first_seq": gap.first_seq,
                "last_seq": gap.last_seq,
                "count": gap.count,
            }
            seq, ts, size = self.store.insert_gap(db, data)
            self._open[key] = _OpenGap(seq, ts, data, size)

    def _extend(
        self, db: sqlite3.Connection, key: tuple[str, int], last: _OpenGap, gap: Gap
    ) -> bool:
        if not self.store.claims.never_claimed(last.seq, Priority.ALERT):
            return False  # it may be on its way: a changed copy would be dropped as a duplicate
        data = {**last.data, "last_seq": gap.last_seq, "count": last.data["count"] + gap.count}
        payload = self.store.gap_envelope(last.seq, last.ts, data)
        if (
            db.execute("UPDATE events SET payload = ? WHERE seq = ?", (payload, last.seq)).rowcount
            != 1
        ):
            return False  # acked, or dropped itself
        self.store.totals.add("pending_bytes", len(payload) - last.size)
        self._open[key] = _OpenGap(last.seq, last.ts, data, len(payload))
        return True
