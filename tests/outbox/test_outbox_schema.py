"""Named migrations: recorded in the database, each in one transaction, run once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge_agent.outbox.schema import MIGRATIONS, FileSettings, connect, migrate


def _open(path: Path) -> sqlite3.Connection:
    return connect(path, FileSettings())


def test_migrations_are_recorded_and_run_once(tmp_path: Path) -> None:
    conn = _open(tmp_path / "o.sqlite3")
    assert migrate(conn) == [name for name, _ in MIGRATIONS]
    epoch = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
    assert migrate(conn) == []
    assert conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0] == epoch
    recorded = [r[0] for r in conn.execute("SELECT name FROM _migrations")]
    assert recorded == [name for name, _ in MIGRATIONS]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    conn = _open(tmp_path / "o.sqlite3")
    migrate(conn)

    def half_done(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE extra (x)")
        db.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, [*MIGRATIONS, ("9999_extra", half_done)])
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "extra" not in tables
    assert "9999_extra" not in {r[0] for r in conn.execute("SELECT name FROM _migrations")}
    conn.close()
