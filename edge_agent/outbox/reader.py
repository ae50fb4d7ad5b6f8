"""Read-only access to an outbox file, safe while the agent writes it (WAL readers)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.errors import StorageError
from edge_agent.outbox.rows import OutboxRow
from edge_agent.outbox.schema import file_bytes
from edge_agent.outbox.store import COUNTERS

_ROW = "SELECT seq, priority, ts, kind, stream, payload FROM events"


class OutboxReader:
    """Inspect or export an outbox from a plain process (the CLI) without writing to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise StorageError(f"no outbox at {path}: check paths.state_dir in the configuration")
        try:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout=5000")
            self.epoch = str(
                self._conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
            )
        except (sqlite3.Error, TypeError) as exc:
            raise StorageError(f"cannot read outbox {path}: {exc}") from exc

    def __enter__(self) -> OutboxReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def stats(self) -> dict[str, Any]:
        try:
            # One read transaction, so the counters and the oldest row agree.
            self._conn.execute("BEGIN")
            totals = dict.fromkeys(COUNTERS, 0)
            totals.update(
                {str(k): int(v) for k, v in self._conn.execute("SELECT name, value FROM totals")}
            )
            oldest = self._conn.execute(
                "SELECT created FROM events ORDER BY seq LIMIT 1"
            ).fetchone()
            last = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name='events'"
            ).fetchone()
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read outbox {self.path}: {exc}") from exc
        return {
            "epoch": self.epoch,
            "last_seq": 0 if last is None else int(last[0]),
            **totals,
            "oldest_pending_age_s": None if oldest is None else max(0.0, time.time() - oldest[0]),
            "file_bytes": file_bytes(self.path),
        }

    def peek(self, limit: int) -> list[OutboxRow]:
        """The next `limit` rows the publisher would send, in (priority, seq) order."""
        try:
            rows = self._conn.execute(f"{_ROW} ORDER BY priority, seq LIMIT ?", (limit,))
            return [OutboxRow(*row) for row in rows]
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read outbox {self.path}: {exc}") from exc

    def export(self, since: int = 0) -> Iterator[OutboxRow]:
        """Every pending row with seq greater than `since`, in seq order, streamed."""
        try:
            cursor = self._conn.execute(f"{_ROW} WHERE seq > ? ORDER BY seq", (since,))
            while batch := cursor.fetchmany(500):
                for row in batch:
                    yield OutboxRow(*row)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read outbox {self.path}: {exc}") from exc
