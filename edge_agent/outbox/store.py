"""The synchronous core of the outbox: one connection, used by one thread at a time.

Every write is one transaction that inserts, deletes acknowledged rows, enforces the quota
and commits the counters together, so a crash at any point leaves rows and counts agreeing.
Opening it decides the epoch (`identity.judge`) against the seq ledger beside the file.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_agent.config.outbox import OutboxConfig
from edge_agent.contract import Kind, Priority
from edge_agent.errors import StorageError
from edge_agent.outbox.claims import ClaimBook
from edge_agent.outbox.drops import Drops
from edge_agent.outbox.encode import TailEncoder, envelope, envelope_prefix
from edge_agent.outbox.identity import Loss, StoreFacts, highest_used, judge
from edge_agent.outbox.ledger import LedgerRecord, SeqLedger, current_boot
from edge_agent.outbox.packing import pack
from edge_agent.outbox.rows import NewEvent, OutboxRow, StoredRow
from edge_agent.outbox.schema import (
    FileSettings,
    Quarantined,
    open_database,
    open_reader,
)
from edge_agent.outbox.totals import Totals
from edge_agent.sqlite import atomic

log = logging.getLogger(__name__)

# Seqs reserved ahead in the ledger: one fsync of a 4 KiB block per this many events.
RESERVE_AHEAD = 10_000
ROW_MAX_BYTES = 256 * 1024
_INSERT = (
    "INSERT INTO events (seq, last_seq, priority, ts, created, kind, stream, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class Store:
    """The outbox database with its counters, claim book and seq ledger."""

    def __init__(
        self,
        path: Path,
        *,
        node: str,
        config: OutboxConfig,
        clock: Callable[[], float] = time.time,
        boot: Callable[[], str] = current_boot,
    ) -> None:
        self.path = path
        self.node = node
        self.config = config
        self.clock = clock
        self.boot = boot
        self.epoch = ""
        self.quarantined: Quarantined | None = None
        self.loss: Loss | None = None
        self.max_event_bytes = config.max_bytes // 4
        self.totals = Totals()
        self.claims = ClaimBook()
        self.growth_limited = False
        self.transactions = 0
        self.prefix = b""
        self.page_bytes = config.page_size  # the file's own, once open
        self.checkpoint_pages = config.checkpoint_pages  # as capped by the reserve, once open
        self._conn: sqlite3.Connection | None = None
        # Claims read on a connection of their own: WAL lets them run beside the writer.
        self._reader: sqlite3.Connection | None = None
        self._ledger = SeqLedger(path.with_name(path.name + ".seqs"))
        self._tails = TailEncoder()  # for the store's own events (gaps, alerts)
        self._drops = Drops(self)
        self._deleted: list[int] = []
        self._marked = -1
        self._max_pages = 0
        self._oldest: float | None = None
        self._lock = threading.Lock()

    # -- opening -------------------------------------------------------------------------

    def file_settings(self) -> FileSettings:
        return FileSettings(
            synchronous=self.config.synchronous,
            max_file_bytes=self.config.max_file_bytes,
            page_size=self.config.page_size,
            checkpoint_pages=self.config.checkpoint_pages,
            reserve_bytes=self.config.disk_reserve_bytes,
        )

    def open(self) -> None:
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            opened = open_database(self.path, self.file_settings())
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open outbox {self.path}: {exc}") from exc
        self._conn, self.quarantined = opened.conn, opened.quarantined
        try:
            self._reader = open_reader(self.path)
            self._max_pages = int(self.db.execute("PRAGMA max_page_count").fetchone()[0])
            self.page_bytes = int(self.db.execute("PRAGMA page_size").fetchone()[0])
            self.checkpoint_pages = int(self.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            self.epoch = str(
                self.db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
            )
            self.totals.load(self.db)
            record, mark = self._ledger.open()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StorageError(f"cannot open outbox {self.path}: {exc}") from exc
        fresh = "0001_initial" in opened.applied
        facts = StoreFacts(
            epoch=self.epoch,
            last_seq=self.totals.last_seq,
            fresh=fresh,
            file_existed=existed,
            upgraded="0002_packed_rows" in opened.applied and not fresh,
        )
        boot = self.boot()
        if self.quarantined is not None and record is not None:
            # The damaged file could not say whose it was or how far it went: the ledger
            # beside it can (its epoch, and the last commit it marked in that epoch).
            q = self.quarantined
            marked = mark.seq if mark is not None and mark.epoch == record.epoch else None
            self.quarantined = replace(
                q,
                previous_epoch=q.previous_epoch or record.epoch,
                last_seq=q.last_seq if q.last_seq is not None else marked,
            )
        if self.quarantined is None:
            self.loss = judge(record, mark, facts, ledger_existed=self._ledger.existed, boot=boot)
        try:
            if self.quarantined is not None or self.loss is not None:
                self._new_epoch(highest_used(record, mark, facts) + 1, boot)
            else:
                self._ledger.save(
                    LedgerRecord(
                        self.epoch,
                        max(self.totals.last_seq, 0 if record is None else record.reserved),
                        boot,
                        self.config.synchronous,
                    )
                )
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StorageError(f"cannot open outbox {self.path}: {exc}") from exc
        self.prefix = envelope_prefix(self.node, self.epoch)
        self._refresh_oldest()

    def _new_epoch(self, first_seq: int, boot: str) -> None:
        """Start a new epoch at `first_seq` and report why, in one transaction."""
        fresh_file = self.quarantined is not None or (
            self.loss is not None and self.loss.cause in ("file_missing", "file_reset")
        )
        if not fresh_file:  # a fresh file was born with a new epoch already
            self.epoch = secrets.token_hex(8)
        self._ledger.save(
            LedgerRecord(self.epoch, first_seq + RESERVE_AHEAD, boot, self.config.synchronous)
        )
        self.totals.skip_to(first_seq - 1)
        self.prefix = envelope_prefix(self.node, self.epoch)
        now = self.clock()
        reports = self.quarantined or self.loss
        assert reports is not None
        alert, gap = reports.reports(self.epoch)
        events = [
            self._own_event(Kind.ALERT, "alert", now, alert),
            self._own_event(Kind.GAP, "gap", now, gap),
        ]
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (self.epoch,))
            if self.quarantined is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('quarantined', ?)",
                    (self.quarantined.moved_to.name,),
                )
                # Rows that were pending in the moved file; unknown (null in the gap) when
                # even the counters were unreadable. The file is kept for salvage.
                self.totals.add("dropped_corrupt", self.quarantined.pending_rows or 0)
            self._insert(db, events)
        if self.loss is not None:  # a quarantine was logged when the file was moved
            log.error(
                "outbox: new epoch %s after epoch %s: %s (seqs continue at %d)",
                self.epoch,
                self.loss.previous_epoch,
                self.loss.detail,
                first_seq,
            )

    @property
    def db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("outbox is closed")
        return self._conn

    def close(self, *, clean: bool = False) -> None:
        """Close; `clean` checkpoints and records the last seq, proof that nothing is lost."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._conn is not None:
            record = self._ledger.record
            if clean and record is not None and record.epoch == self.epoch:
                try:
                    busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                    if not busy:
                        self._ledger.save(replace(record, clean=self.totals.last_seq))
                except (sqlite3.Error, OSError) as exc:
                    log.warning("outbox: closing without a clean mark: %s", exc)
            self._conn.close()
            self._conn = None
        self._ledger.close()

    # -- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that also saves the totals; on any failure the in-memory
        counters and the rows marked deleted or dropped roll back with it."""
        self.totals.begin()
        self._drops.begin()
        try:
            with atomic(self.db) as db:
                yield db
                self.totals.save(db)
        except BaseException:
            self.totals.rollback()
            self._deleted = []
            self._drops.rollback()
            raise
        self.totals.commit()
        self.transactions += 1
        self.claims.forget(self._deleted)
        self._deleted = []
        self._drops.committed()
        if self.totals.last_seq != self._marked:
            self._marked = self.totals.last_seq
            self._ledger.mark(self.epoch, self._marked)

    def write(self, events: Sequence[NewEvent], acks: Iterable[int]) -> list[int]:
        """Commit events and delete acknowledged seqs in one transaction; returns the seqs.

        On a database error nothing is kept and the error propagates."""
        with self._transaction() as db:
            seqs = self._insert(db, events)
            self._delete_acked(db, acks)
            self._drops.enforce_quota(db)
        self._refresh_oldest()
        return seqs

    def _insert(self, db: sqlite3.Connection, events: Sequence[NewEvent]) -> list[int]:
        if not events:
            return []
        first = self.totals.last_seq + 1
        last = first + len(events) - 1
        if self._ledger.record is None or last > self._ledger.record.reserved:
            self._ledger.reserve(last + RESERVE_AHEAD)  # on the device before any is used
        seqs = [0] * len(events)
        rows: list[tuple[Any, ...]] = []
        size = 0
        now = self.clock()
        compress = self.config.compression == "zstd"
        seq = first
        for members in self._rows_of(events):
            head = events[members[0]]
            envelopes = []
            for offset, index in enumerate(members):
                seqs[index] = seq + offset
                envelopes.append(envelope(self.prefix, seq + offset, events[index].tail))
            payload = pack(envelopes, compress=compress)
            rows.append(
                (
                    seq,
                    seq + len(members) - 1,
                    head.priority,
                    head.ts,
                    now,
                    head.kind,
                    head.stream,
                    payload,
                )
            )
            size += len(payload)
            seq += len(members)
        db.executemany(_INSERT, rows)
        self.totals.inserted(len(events), len(rows), size, last)
        return seqs

    def _rows_of(self, events: Sequence[NewEvent]) -> list[list[int]]:
        """Which events share a row: the readings of one read (same stream, time and kind),
        up to `row_max_events`; every other event has a row of its own."""
        limit = self.config.row_max_events
        if limit == 1 or len(events) == 1:
            return [[i] for i in range(len(events))]
        groups: dict[object, list[list[int]]] = {}
        sizes: dict[object, int] = {}
        for i, event in enumerate(events):
            key: object = (
                (event.stream, event.ts, event.kind) if event.priority == Priority.READING else i
            )
            rows = groups.get(key)
            if rows is None or len(rows[-1]) >= limit or sizes[key] > ROW_MAX_BYTES:
                rows = groups.setdefault(key, [])
                rows.append([])
                sizes[key] = 0
            rows[-1].append(i)
            sizes[key] += len(event.tail)
        return [row for rows in groups.values() for row in rows]

    def alert_event(self, data: dict[str, Any]) -> NewEvent:
        """An alert of the outbox's own, to write."""
        return self._own_event(Kind.ALERT, "alert", self.clock(), data)

    def _own_event(self, kind: Kind, stream: str, ts: float, data: dict[str, Any]) -> NewEvent:
        return NewEvent(
            str(kind), stream, ts, Priority.ALERT, self._tails.encode(ts, str(kind), data)
        )

    def insert_gap(self, db: sqlite3.Connection, data: dict[str, Any]) -> tuple[int, float, int]:
        """Queue a gap event; returns its seq, time and stored size."""
        now = self.clock()
        (seq,) = self._insert(db, [self._own_event(Kind.GAP, "gap", now, data)])
        return seq, now, len(self.gap_envelope(seq, now, data))

    def gap_envelope(self, seq: int, ts: float, data: dict[str, Any]) -> bytes:
        return envelope(self.prefix, seq, self._tails.encode(ts, str(Kind.GAP), data))

    def _delete_acked(self, db: sqlite3.Connection, acks: Iterable[int]) -> None:
        """Delete the rows whose every event is acked, in runs of consecutive seqs."""
        unknown = self.claims.ack(acks)
        for row, seqs in self._rows_holding(db, unknown):
            self.claims.adopt(row, seqs)
        rows = sorted(self.claims.complete(), key=lambda r: r.seq)
        for first, last in _runs(rows):
            db.execute("DELETE FROM events WHERE seq BETWEEN ? AND ?", (first, last))
        self.totals.removed(rows, "acked")
        self._deleted = [r.seq for r in rows]
        self._drops.drop_damaged(db, self.claims.damaged())

    def _rows_holding(
        self, db: sqlite3.Connection, seqs: Sequence[int]
    ) -> list[tuple[StoredRow, list[int]]]:
        found: dict[int, tuple[StoredRow, list[int]]] = {}
        for seq in seqs:
            hit = db.execute(
                "SELECT seq, last_seq, priority, LENGTH(payload), created FROM events"
                " WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
                (seq,),
            ).fetchone()
            if hit is not None and seq <= hit[1]:
                found.setdefault(hit[0], (StoredRow(*hit), []))[1].append(seq)
        return list(found.values())

    def expire(self) -> int:
        """Remove rows older than their class's TTL (one bounded chunk per class)."""
        if not self._drops.anything_expired(self.db):
            return 0  # no transaction: nothing written when there is nothing to drop
        with self._transaction() as db:
            dropped = self._drops.expire(db)
        self._refresh_oldest()
        return dropped

    def evict_for_space(self, size: int) -> int:
        """Drop the oldest lowest-priority rows, `size` stored bytes at least, to make room
        on a full disk; returns the events dropped."""
        with self._transaction() as db:
            dropped = self._drops.evict_for_space(db, size)
        self._refresh_oldest()
        return dropped

    def checkpoint(self) -> None:
        # RESTART, not TRUNCATE: the WAL keeps its size, room that a full disk cannot take.
        self.db.execute("PRAGMA wal_checkpoint(RESTART)")

    def limit_growth(self) -> None:
        """Forbid the main file to grow: with no new pages in the WAL, a checkpoint never
        needs disk space, so the WAL can always be emptied and rows evicted to make room."""
        pages = int(self.db.execute("PRAGMA page_count").fetchone()[0])
        self.db.execute(f"PRAGMA max_page_count={pages}")
        self.growth_limited = True

    def restore_growth(self) -> None:
        self.db.execute(f"PRAGMA max_page_count={self._max_pages}")
        self.growth_limited = False

    def space_needed(self) -> int:
        """Free bytes this file may still need to keep checkpointing: room in the main file
        for pages that are new since the last checkpoint, and room for the WAL to reach the
        size at which it is checkpointed (it is reused from its start after that)."""
        try:
            main = self.path.stat().st_size
            wal = self.path.with_name(self.path.name + "-wal").stat().st_size
        except OSError:
            main = wal = 0
        pages = int(self.db.execute("PRAGMA page_count").fetchone()[0])
        debt = max(0, pages * self.page_bytes - main)
        frames = self.checkpoint_pages * (self.page_bytes + 24) + 32
        return debt + max(0, frames - wal)

    # -- draining ------------------------------------------------------------------------

    def claim(self, limit: int) -> list[OutboxRow]:
        """The oldest unclaimed events in (priority, seq) order, streamed with a cursor.

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
        with self._lock:
            self._oldest = None if row is None else float(row[0])

    @property
    def oldest_created(self) -> float | None:
        with self._lock:
            return self._oldest


def _runs(rows: Sequence[StoredRow]) -> list[tuple[int, int]]:
    """Rows sorted by seq as (first row seq, last row seq) runs that cover consecutive seqs:
    no other row can lie inside a run, so each is one range delete."""
    runs: list[tuple[int, int]] = []
    end = -1
    for row in rows:
        if runs and row.seq == end + 1:
            runs[-1] = (runs[-1][0], row.seq)
        else:
            runs.append((row.seq, row.seq))
        end = row.last_seq
    return runs
