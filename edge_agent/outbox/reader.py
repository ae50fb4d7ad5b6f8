"""Read-only access to an outbox file, safe while the agent writes it (WAL readers)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.contract import ContractError
from edge_agent.errors import StorageError
from edge_agent.outbox.packing import unpack
from edge_agent.outbox.rows import OutboxRow
from edge_agent.outbox.schema import file_bytes
from edge_agent.outbox.totals import COUNTERS


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
            columns = {str(r[1]) for r in self._conn.execute("PRAGMA table_info(events)")}
        except (sqlite3.Error, TypeError) as exc:
            raise StorageError(f"cannot read outbox {path}: {exc}") from exc
        # A file the agent has not migrated yet stores one event per row.
        self._last = "last_seq" if "last_seq" in columns else "seq"
        self._select = f"SELECT seq, {self._last}, priority, ts, kind, stream, payload FROM events"

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
            if self._last == "seq":
                last = self._conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name='events'"
                ).fetchone()
                totals["last_seq"] = 0 if last is None else int(last[0])
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read outbox {self.path}: {exc}") from exc
        return {
            "epoch": self.epoch,
            **totals,
            "oldest_pending_age_s": None if oldest is None else max(0.0, time.time() - oldest[0]),
            "file_bytes": file_bytes(self.path),
        }

    def peek(self, limit: int) -> list[OutboxRow]:
        """The next `limit` events the publisher would send, in (priority, seq) order."""
        out: list[OutboxRow] = []
        for row in self._rows(f"{self._select} ORDER BY priority, seq", ()):
            if len(out) >= limit:
                break
            out.append(row)
        return out

    def export(self, since: int = 0) -> Iterator[OutboxRow]:
        """Every pending event with seq greater than `since`, in seq order, streamed."""
        # A row starting at or before `since` may still carry events after it.
        query = f"{self._select} WHERE {self._last} > ? ORDER BY seq"
        for row in self._rows(query, (since,)):
            if row.seq > since:
                yield row

    def _rows(self, query: str, args: tuple[Any, ...]) -> Iterator[OutboxRow]:
        try:
            cursor = self._conn.execute(query, args)
            while batch := cursor.fetchmany(64):
                for seq, last_seq, priority, ts, kind, stream, payload in batch:
                    try:
                        envelopes = unpack(payload, last_seq - seq + 1)
                    except ContractError as exc:
                        raise StorageError(f"outbox {self.path}: row {seq}: {exc}") from exc
                    for i, body in enumerate(envelopes):
                        yield OutboxRow(seq + i, priority, ts, kind, stream, body)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read outbox {self.path}: {exc}") from exc
