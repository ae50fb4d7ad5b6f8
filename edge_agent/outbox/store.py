"""The synchronous core of the outbox: one connection, used by one thread at a time.

Every write is one transaction that inserts, deletes acknowledged rows, enforces the quota
and commits the counters together, so a crash at any point leaves rows and counts agreeing.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edge_agent.config.outbox import OutboxConfig
from edge_agent.contract import ContractError, Kind, Priority, dumps
from edge_agent.errors import StorageError
from edge_agent.outbox.claims import PRIORITIES, ClaimBook
from edge_agent.outbox.encode import EnvelopeEncoder
from edge_agent.outbox.rows import Gap, NewEvent, OutboxRow
from edge_agent.outbox.schema import (
    Quarantined,
    atomic,
    file_bytes,
    open_database,
    open_reader,
)

REASONS = ("ttl", "quota", "corrupt", "disk_full")
COUNTERS = ("pending_rows", "pending_bytes", "written", "acked", *(f"dropped_{r}" for r in REASONS))
# Room kept for the gap rows an eviction adds, so the quota holds after they are inserted.
GAP_RESERVE_BYTES = 512
_CHUNK = 500
_INSERT = (
    "INSERT INTO events (seq, priority, ts, created, kind, stream, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class Store:
    """The outbox database with its counters and claim cursor."""

    def __init__(
        self,
        path: Path,
        *,
        node: str,
        config: OutboxConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.node = node
        self.config = config
        self.clock = clock
        self.epoch = ""
        self.quarantined: Quarantined | None = None
        self.max_event_bytes = config.max_bytes // 4
        self._conn: sqlite3.Connection | None = None
        # Claims read on a connection of their own: WAL lets them run beside the writer.
        self._reader: sqlite3.Connection | None = None
        self._next_seq = 1
        self._totals = dict.fromkeys(COUNTERS, 0)
        self._oldest: float | None = None
        self._transactions = 0
        self._max_pages = 0
        self._encoder = EnvelopeEncoder(node, "")
        self.growth_limited = False
        self.claims = ClaimBook()
        # Classes dropped up to a seq in the open transaction, for the claim book after commit.
        self._dropped: list[tuple[int, int]] = []
        self._stats_lock = threading.Lock()

    # -- opening -------------------------------------------------------------------------

    def open(self) -> None:
        try:
            conn, self.quarantined = open_database(
                self.path,
                synchronous=self.config.synchronous,
                max_file_bytes=self.config.max_file_bytes,
                reserve_bytes=self.config.disk_reserve_bytes,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open outbox {self.path}: {exc}") from exc
        self._conn = conn
        try:
            self._reader = open_reader(self.path)
        except sqlite3.Error as exc:
            self.close()
            raise StorageError(f"cannot open outbox {self.path}: {exc}") from exc
        self._max_pages = int(conn.execute("PRAGMA max_page_count").fetchone()[0])
        self.epoch = str(conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0])
        self._encoder = EnvelopeEncoder(self.node, self.epoch)
        self._load()
        if self.quarantined is not None:
            self._report_quarantine(self.quarantined)

    def _load(self) -> None:
        db = self.db
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        totals = dict.fromkeys(COUNTERS, 0)
        totals.update({str(k): int(v) for k, v in db.execute("SELECT name, value FROM totals")})
        with self._stats_lock:
            self._next_seq = (0 if row is None else int(row[0])) + 1
            self._totals = totals
        self._refresh_oldest()

    def _report_quarantine(self, q: Quarantined) -> None:
        moved = {
            "reason": "corrupt",
            "detail": q.reason,
            "quarantined_file": q.moved_to.name,
            "previous_epoch": q.previous_epoch,
            "previous_last_seq": q.last_seq,
        }
        gap = {**moved, "first_seq": None, "last_seq": q.last_seq, "count": q.pending_rows}
        alert = {"alert": "outbox_corrupt", "severity": "error", **moved}
        with self._stats_lock:
            # Rows that were pending in the moved file; unknown (null in the gap) when even
            # the counters were unreadable. The file is kept, so they can still be salvaged.
            self._totals["dropped_corrupt"] += q.pending_rows or 0
        now = self.clock()
        self.write(
            [
                NewEvent(Kind.ALERT, "alert", now, alert, Priority.ALERT),
                NewEvent(Kind.GAP, "gap", now, gap, Priority.ALERT),
            ],
            [],
        )
        self._set_meta("quarantined", q.moved_to.name)

    def _set_meta(self, key: str, value: str) -> None:
        with atomic(self.db) as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("outbox is closed")
        return self._conn

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that also saves the totals; on any failure the in-memory
        counters (next seq, totals, rows marked dropped) roll back with it."""
        with self._stats_lock:
            saved = (self._next_seq, dict(self._totals))
        try:
            with atomic(self.db) as db:
                yield db
                self._save_totals(db)
        except BaseException:
            with self._stats_lock:
                self._next_seq, self._totals = saved
            self._dropped.clear()
            raise

    def write(self, events: Sequence[NewEvent], acks: Iterable[int]) -> list[int | BaseException]:
        """Commit events and delete acknowledged seqs in one transaction.

        Returns, per event, its seq or the error that refused it (bad payload, too big).
        On a database error nothing is kept and the error propagates.
        """
        acked = sorted(set(acks))
        with self._transaction() as db:
            results = self._insert(db, events)
            self._delete(db, acked)
            self._enforce_quota(db, "quota")
        self._committed(acked)
        with self._stats_lock:
            self._transactions += 1
        self._refresh_oldest()
        return results

    def _insert(
        self, db: sqlite3.Connection, events: Sequence[NewEvent]
    ) -> list[int | BaseException]:
        now = self.clock()
        seq = self._next_seq
        splice = self._encoder.splice
        # The envelope around a tail: the prefix and at most 20 digits of seq.
        room = self.max_event_bytes - len(self._encoder.prefix) - 20
        if all(e.tail is not None and len(e.tail) <= room for e in events):
            # The producers built every tail and none can be too big: only the seq to splice.
            seqs = range(seq, seq + len(events))
            rows = [
                (s, e.priority, e.ts, now, e.kind, e.stream, splice(s, e.tail))  # type: ignore[arg-type]
                for s, e in zip(seqs, events, strict=True)
            ]
            results: list[int | BaseException] = list(seqs)
            seq += len(rows)
        else:
            rows, results, seq = self._encode_each(events, seq, now)
        if rows:
            db.executemany(_INSERT, rows)
        size = sum(len(r[6]) for r in rows)
        with self._stats_lock:
            self._next_seq = seq
            self._totals["pending_rows"] += len(rows)
            self._totals["pending_bytes"] += size
            self._totals["written"] += len(rows)
        return results

    def _encode_each(
        self, events: Sequence[NewEvent], seq: int, now: float
    ) -> tuple[list[tuple[Any, ...]], list[int | BaseException], int]:
        """Rows for events one at a time, refusing the ones that cannot be stored."""
        rows: list[tuple[Any, ...]] = []
        results: list[int | BaseException] = []
        for event in events:
            try:
                if event.tail is None:
                    blob = self._encoder.encode(seq, event.ts, event.kind, dumps(event.data))
                else:
                    blob = self._encoder.splice(seq, event.tail)
            except (ContractError, TypeError, ValueError) as exc:
                results.append(
                    StorageError(f"{event.kind} event on stream {event.stream} not stored: {exc}")
                )
                continue
            if len(blob) > self.max_event_bytes:
                results.append(
                    StorageError(
                        f"event of {len(blob)} bytes exceeds the largest allowed"
                        f" ({self.max_event_bytes}, a quarter of outbox.max_bytes)"
                    )
                )
                continue
            rows.append((seq, event.priority, event.ts, now, event.kind, event.stream, blob))
            results.append(seq)
            seq += 1
        return rows, results, seq

    def _delete(self, db: sqlite3.Connection, seqs: Sequence[int]) -> None:
        """Delete sorted, distinct seqs; a backlog's acks are runs of consecutive seqs,
        deleted one range at a time."""
        rows = size = 0
        for first, last in _runs(seqs):
            n, b = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events"
                " WHERE seq BETWEEN ? AND ?",
                (first, last),
            ).fetchone()
            if n:
                db.execute("DELETE FROM events WHERE seq BETWEEN ? AND ?", (first, last))
            rows += n
            size += b
        with self._stats_lock:
            self._totals["pending_rows"] -= rows
            self._totals["pending_bytes"] -= size
            self._totals["acked"] += rows

    def _committed(self, acked: Iterable[int]) -> None:
        # Only once the deletes are committed: until then a claim (on its own connection)
        # still sees those rows, and must keep skipping them.
        self.claims.forget(acked)
        dropped, self._dropped = self._dropped, []
        for priority, last in dropped:
            self.claims.forget_through(priority, last)

    def _over(self, extra_rows: int) -> bool:
        with self._stats_lock:
            rows = self._totals["pending_rows"] + extra_rows
            size = self._totals["pending_bytes"] + extra_rows * GAP_RESERVE_BYTES
        max_rows = self.config.max_rows
        return size > self.config.max_bytes or (max_rows is not None and rows > max_rows)

    def _enforce_quota(self, db: sqlite3.Connection, reason: str) -> None:
        for _ in range(3):
            if not self._over(0):
                return
            gaps: list[Gap] = []
            for priority in reversed(PRIORITIES):
                gap = self._drop_oldest(db, priority, reason, lambda g: not self._over(g), gaps)
                if gap is not None:
                    gaps.append(gap)
                if not self._over(len(gaps)):
                    break
            self._insert_gaps(db, gaps)

    def _drop_oldest(
        self,
        db: sqlite3.Connection,
        priority: int,
        reason: str,
        enough: Callable[[int], bool],
        gaps: list[Gap],
        *,
        cutoff: float | None = None,
    ) -> Gap | None:
        """Drop the oldest rows of one class until `enough(gap_rows)` or (TTL) a young row."""
        cursor = db.execute(
            "SELECT seq, LENGTH(payload), created FROM events WHERE priority = ? ORDER BY seq",
            (priority,),
        )
        first = last = None
        count = size = 0
        try:
            while True:
                batch = cursor.fetchmany(_CHUNK)
                if not batch:
                    break
                stop = False
                for seq, length, created in batch:
                    if cutoff is not None and created >= cutoff:
                        stop = True
                        break
                    if cutoff is None and enough(len(gaps) + (1 if count else 0)):
                        stop = True
                        break
                    first = seq if first is None else first
                    last = seq
                    count += 1
                    size += length
                    with self._stats_lock:
                        self._totals["pending_rows"] -= 1
                        self._totals["pending_bytes"] -= length
                if stop or (cutoff is not None and count >= 10 * _CHUNK):
                    break
        finally:
            cursor.close()
        if first is None or last is None:
            return None
        db.execute(
            "DELETE FROM events WHERE priority = ? AND seq BETWEEN ? AND ?", (priority, first, last)
        )
        with self._stats_lock:
            self._totals[f"dropped_{reason}"] += count
        self._dropped.append((priority, last))
        return Gap(reason, priority, first, last, count)

    def _insert_gaps(self, db: sqlite3.Connection, gaps: Sequence[Gap]) -> None:
        now = self.clock()
        events = [
            NewEvent(
                Kind.GAP,
                "gap",
                now,
                {
                    "reason": g.reason,
                    "priority": Priority(g.priority).name.lower(),
                    "first_seq": g.first_seq,
                    "last_seq": g.last_seq,
                    "count": g.count,
                },
                Priority.ALERT,
            )
            for g in gaps
        ]
        if events:
            self._insert(db, events)

    def _save_totals(self, db: sqlite3.Connection) -> None:
        with self._stats_lock:
            items = list(self._totals.items())
        db.executemany("INSERT OR REPLACE INTO totals VALUES (?, ?)", items)

    def expire(self) -> int:
        """Remove rows older than their class's TTL (one bounded chunk per class)."""
        gaps: list[Gap] = []
        with self._transaction() as db:
            now = self.clock()
            for priority in PRIORITIES:
                cutoff = now - self.config.ttl_of(priority)
                gap = self._drop_oldest(db, priority, "ttl", lambda _: False, gaps, cutoff=cutoff)
                if gap is not None:
                    gaps.append(gap)
            self._insert_gaps(db, gaps)
        self._committed(())
        self._refresh_oldest()
        return sum(g.count for g in gaps)

    def evict_for_space(self, rows: int) -> int:
        """Drop up to `rows` oldest lowest-priority rows to make room on a full disk."""
        with self._stats_lock:
            target = max(0, self._totals["pending_rows"] - rows)
        gaps: list[Gap] = []
        with self._transaction() as db:
            for priority in reversed(PRIORITIES):
                gap = self._drop_oldest(
                    db,
                    priority,
                    "disk_full",
                    lambda _: self._totals["pending_rows"] <= target,
                    gaps,
                )
                if gap is not None:
                    gaps.append(gap)
            self._insert_gaps(db, gaps)
        self._committed(())
        self._refresh_oldest()
        return sum(g.count for g in gaps)

    def checkpoint(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def limit_growth(self) -> None:
        """Forbid the main file to grow: with no new pages in the WAL, a checkpoint never
        needs disk space, so the WAL can always be emptied and rows evicted to make room."""
        pages = int(self.db.execute("PRAGMA page_count").fetchone()[0])
        self.db.execute(f"PRAGMA max_page_count={pages}")
        self.growth_limited = True

    def restore_growth(self) -> None:
        self.db.execute(f"PRAGMA max_page_count={self._max_pages}")
        self.growth_limited = False

    # -- draining ------------------------------------------------------------------------

    def claim(self, limit: int) -> list[OutboxRow]:
        """The oldest unclaimed rows in (priority, seq) order, streamed with a cursor.

        Reads on the claim connection: safe to call from another thread than the writer's
        (one claim at a time)."""
        if self._reader is None:
            raise StorageError("outbox is closed")
        return self.claims.claim(self._reader, limit)

    def release(self, seqs: Iterable[int] | None = None) -> None:
        self.claims.release(seqs)

    # -- facts ---------------------------------------------------------------------------

    def _refresh_oldest(self) -> None:
        row = self.db.execute("SELECT created FROM events ORDER BY seq LIMIT 1").fetchone()
        with self._stats_lock:
            self._oldest = None if row is None else float(row[0])

    @property
    def next_seq(self) -> int:
        with self._stats_lock:
            return self._next_seq

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            totals = dict(self._totals)
            oldest = self._oldest
        claimed = len(self.claims)
        return {
            "epoch": self.epoch,
            "last_seq": self._next_seq - 1,
            **totals,
            "claimed_rows": claimed,
            "transactions": self._transactions,
            "oldest_pending_age_s": None if oldest is None else max(0.0, self.clock() - oldest),
            "file_bytes": file_bytes(self.path),
            "quarantined_file": None
            if self.quarantined is None
            else self.quarantined.moved_to.name,
        }


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted distinct seqs as (first, last) runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    if not seqs:
        return runs
    first = last = seqs[0]
    for seq in seqs[1:]:
        if seq != last + 1:
            runs.append((first, last))
            first = seq
        last = seq
    runs.append((first, last))
    return runs
