"""Opening the outbox file: pragmas, named migrations, and quarantine of a corrupt file."""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.sqlite import atomic

log = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm")


def _initial(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # AUTOINCREMENT keeps sqlite_sequence at the highest seq ever used, so a seq is never
    # reused after its row is acknowledged or dropped, across restarts too.
    conn.execute(
        "CREATE TABLE events ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " priority INTEGER NOT NULL,"
        " ts REAL NOT NULL,"
        " created REAL NOT NULL,"
        " kind TEXT NOT NULL,"
        " stream TEXT NOT NULL,"
        " payload BLOB NOT NULL)"
    )
    conn.execute("CREATE INDEX events_drain ON events (priority, seq)")
    # Counters committed with the rows they count: stats and quota checks stay O(1).
    conn.execute("CREATE TABLE totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute(
        "INSERT INTO meta VALUES ('epoch', ?), ('created', ?)",
        (secrets.token_hex(8), str(time.time())),
    )


def _packed_rows(conn: sqlite3.Connection) -> None:
    # A row carries the events seq .. last_seq (the readings of one read). Without
    # AUTOINCREMENT: the highest seq ever used is the `last_seq` total, committed with the
    # rows, and the seq ledger beside the file (ledger.py) bounds it from outside.
    conn.execute(
        "CREATE TABLE rows ("
        " seq INTEGER PRIMARY KEY,"
        " last_seq INTEGER NOT NULL,"
        " priority INTEGER NOT NULL,"
        " ts REAL NOT NULL,"
        " created REAL NOT NULL,"
        " kind TEXT NOT NULL,"
        " stream TEXT NOT NULL,"
        " payload BLOB NOT NULL)"
    )
    conn.execute(
        "INSERT INTO rows SELECT seq, seq, priority, ts, created, kind, stream, payload FROM events"
    )
    conn.execute(
        "INSERT OR REPLACE INTO totals VALUES ('last_seq',"
        " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))"
    )
    conn.execute(
        "INSERT OR REPLACE INTO totals VALUES ('stored_rows', (SELECT COUNT(*) FROM events))"
    )
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE rows RENAME TO events")
    conn.execute("CREATE INDEX events_drain ON events (priority, seq)")


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    # Append only; a released name never changes.
    ("0001_initial", _initial),
    ("0002_packed_rows", _packed_rows),
]


Migration = tuple[str, Callable[[sqlite3.Connection], None]]


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = ()) -> list[str]:
    """Run the migrations not yet recorded, each in its own transaction; returns their names."""
    migrations = migrations or MIGRATIONS
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    applied = []
    for name, step in migrations:
        if name in done:
            continue
        with atomic(conn):
            step(conn)
            conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
        applied.append(name)
    return applied


@dataclass(frozen=True)
class FileSettings:
    """How the outbox file is opened (from OutboxConfig)."""

    synchronous: str = "FULL"
    max_file_bytes: int | None = None
    page_size: int = 4096
    checkpoint_pages: int = 1000
    reserve_bytes: int = 0


def connect(path: Path, settings: FileSettings) -> sqlite3.Connection:
    new = not path.exists() or path.stat().st_size == 0
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        if new:
            # Only before the first page is written: an existing file keeps its page size.
            conn.execute(f"PRAGMA page_size={settings.page_size}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot switch to WAL (journal_mode is {mode})")
        conn.execute(f"PRAGMA synchronous={settings.synchronous}")
        # Zero deleted cells in pages written anyway, but never write a page only to zero it.
        conn.execute("PRAGMA secure_delete=FAST")
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        if settings.max_file_bytes is not None:
            conn.execute(f"PRAGMA max_page_count={max(16, settings.max_file_bytes // page_size)}")
        pages = settings.checkpoint_pages
        if settings.reserve_bytes:
            # New pages waiting in the WAL need that much room in the main file to be
            # checkpointed; keeping them under half the reserve means releasing the reserve
            # always lets a checkpoint finish on a full disk.
            pages = min(pages, max(16, settings.reserve_bytes // page_size // 2))
        conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
    except BaseException:
        conn.close()
        raise
    return conn


def open_reader(path: Path) -> sqlite3.Connection:
    """A second connection that only reads (claims): in WAL mode it never waits for the
    writer, and each statement sees what was committed when it started."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA query_only=ON")
    except BaseException:
        conn.close()
        raise
    return conn


SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26


def error_code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def is_corrupt(exc: sqlite3.Error) -> bool:
    """A damaged or foreign file, as opposed to a busy, full or unreadable one."""
    return error_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)


def check(conn: sqlite3.Connection) -> str | None:
    """None when the file passes `PRAGMA quick_check`, else what is wrong."""
    rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    return None if rows == ["ok"] else "; ".join(str(r) for r in rows[:5])


def foreign(path: Path) -> str | None:
    """What is wrong when `path` is a sound SQLite file that is not an outbox of ours.

    Migrating such a file would fail or, worse, mix someone else's rows into the feed, so it
    is set aside like a damaged one. Read-only, so the file is quarantined byte for byte.
    """
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        tables = {
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        # Our first migration creates the tables and records itself in one transaction.
        recorded = "_migrations" in tables and bool(
            conn.execute("SELECT 1 FROM _migrations LIMIT 1").fetchone()
        )
    except sqlite3.Error:
        return None  # damaged or not SQLite: the quick check below says so
    finally:
        conn.close()
    if tables - {"_migrations"} and not recorded:
        return f"not an edge-agent outbox (tables: {', '.join(sorted(tables))})"
    return None


@dataclass(frozen=True)
class Quarantined:
    """A corrupt file moved aside: where it went, why, and what could still be read of it."""

    moved_to: Path
    reason: str
    previous_epoch: str | None
    last_seq: int | None
    pending_rows: int | None

    def reports(self, epoch: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The `alert` and the `gap` that open the fresh file's epoch."""
        moved = {
            "reason": "corrupt",
            "detail": self.reason,
            "quarantined_file": self.moved_to.name,
            "previous_epoch": self.previous_epoch,
            "previous_last_seq": self.last_seq,
        }
        alert = {"alert": "outbox_corrupt", "severity": "error", **moved}
        # count: the events pending in the moved file; unknown (null) when even its counters
        # were unreadable. The file is kept, so they can still be salvaged.
        gap = {**moved, "first_seq": None, "last_seq": self.last_seq, "count": self.pending_rows}
        return alert, gap


def _salvage(path: Path) -> tuple[str | None, int | None, int | None]:
    epoch: str | None = None
    last_seq: int | None = None
    pending: int | None = None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None, None, None
    try:
        with contextlib.suppress(sqlite3.Error):
            row = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            epoch = None if row is None else str(row[0])
        with contextlib.suppress(sqlite3.Error):
            row = conn.execute("SELECT value FROM totals WHERE name='last_seq'").fetchone()
            if row is None:  # a file from before migration 0002
                row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
            last_seq = None if row is None else int(row[0])
        with contextlib.suppress(sqlite3.Error):
            row = conn.execute("SELECT value FROM totals WHERE name='pending_rows'").fetchone()
            pending = None if row is None else int(row[0])
    finally:
        conn.close()
    return epoch, last_seq, pending


def quarantine(path: Path, reason: str) -> Quarantined:
    """Move a corrupt database (and its WAL) aside with a timestamp; never delete it."""
    epoch, last_seq, pending = _salvage(path)
    stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.rename(target)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return Quarantined(target, reason, epoch, last_seq, pending)


@dataclass(frozen=True)
class Opened:
    """The open database, and what opening it found."""

    conn: sqlite3.Connection
    quarantined: Quarantined | None
    applied: list[str]  # migrations run by this open ("0001_initial" first: a fresh file)


def open_database(path: Path, settings: FileSettings) -> Opened:
    """Open (creating or migrating) the outbox; a file that fails its check is quarantined."""
    path.parent.mkdir(parents=True, exist_ok=True)
    quarantined = None
    for attempt in range(2):
        problem = None if attempt else foreign(path)
        if problem is None:
            conn: sqlite3.Connection | None = None
            try:
                conn = connect(path, settings)
                problem = check(conn)
                if problem is None:
                    return Opened(conn, quarantined, migrate(conn))
            except sqlite3.DatabaseError as exc:
                if attempt or not path.exists() or not is_corrupt(exc):
                    if conn is not None:
                        conn.close()
                    raise
                problem = str(exc)
            if conn is not None:
                conn.close()
        if attempt:
            raise sqlite3.DatabaseError(f"fresh outbox fails its check: {problem}")
        quarantined = quarantine(path, problem)
        log.error(
            "outbox %s is unusable (%s): moved to %s, starting a fresh one with a new epoch",
            path,
            problem,
            quarantined.moved_to,
        )
    raise AssertionError("unreachable")


def file_bytes(path: Path) -> int:
    total = 0
    for candidate in (path, *(path.with_name(path.name + s) for s in SIDE_FILES)):
        with contextlib.suppress(OSError):
            total += candidate.stat().st_size
    return total
