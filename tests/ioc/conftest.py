"""Fixtures of the provincial side: a private PostgreSQL, light nodes, running receivers."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.contract import Envelope, Topics, encode_batch, reading_data, utc_iso
from edge_agent.ioc.receiver import Receiver, ReceiverOptions
from edge_agent.ioc.sqlite_store import SqliteStore
from edge_agent.ioc.store import Store
from edge_agent.sync.link import Link, LinkOptions
from tests.conftest import IN_CI, Broker, free_port, stop_process, wait_for_port

PREFIX = "ioc/v1"


# -- PostgreSQL -------------------------------------------------------------------------


@dataclass
class Postgres:
    """A private cluster: Debian's postgresql binaries, a data dir of its own, a free port,
    run as the unprivileged postgres user (initdb and the server refuse to run as root)."""

    bindir: Path
    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def _as_postgres(self, *command: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return list(command)

    def start(self) -> None:
        data = self.directory / "data"
        subprocess.run(
            self._as_postgres(
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ),
            check=True,
            capture_output=True,
        )
        # fsync off: the tests kill receivers, never the machine; durability on power loss
        # is PostgreSQL's, not ours to test, and the suite shares two cores.
        self.process = subprocess.Popen(
            self._as_postgres(
                str(self.bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.directory),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=50",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port, timeout_s=30, process=self.process)
        import psycopg

        deadline = time.monotonic() + 30
        while True:  # the port opens a moment before the server accepts sessions
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def _postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        message = "PostgreSQL not found: install the Debian package postgresql (scripts/setup)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return Path(found[-1]).parent


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    bindir = _postgres_bindir()
    directory = Path(tempfile.mkdtemp(prefix="ioc-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(directory, account.pw_uid, account.pw_gid)
    server = Postgres(bindir, directory, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres_server: Postgres) -> Iterator[str]:
    """A fresh database of its own for each test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_server.dsn(name)
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Both engines, each test once per engine."""
    if request.param == "sqlite":
        path = tmp_path / "ioc.sqlite3"
        return lambda: SqliteStore(path, synchronous="NORMAL")
    from edge_agent.ioc.postgres_store import PostgresStore

    dsn = request.getfixturevalue("pg_dsn")
    return lambda: PostgresStore(dsn)


def reader_for(opener: Callable[[], Store]) -> Any:
    """A fleet reader on the database a store opener writes to."""
    from edge_agent.ioc.fleet import Reader

    store = opener()
    try:
        if store.engine == "sqlite":
            return Reader.open(path=store.path)  # type: ignore[attr-defined]
        return Reader.open(dsn=store.dsn)  # type: ignore[attr-defined]
    finally:
        store.close()


# -- light nodes ------------------------------------------------------------------------


@dataclass
class LightNode:
    """A node reduced to its wire: envelopes built by our contract code, no outbox."""

    node: str
    district: str = "d1"
    epoch: str = "e0000000000000001"
    prefix: str = PREFIX
    iso = staticmethod(utc_iso)

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix, self.district, self.node)

    def envelope(
        self,
        seq: int,
        kind: str = "reading",
        data: dict[str, Any] | None = None,
        ts: float | None = None,
    ) -> bytes:
        if data is None:
            data = reading_data(
                sensor="aq-1",
                quantity="pm2_5",
                value=float(seq % 90),
                unit="ug/m3",
                stats={"min": 1.0, "mean": 2.0, "max": 3.0, "count": 4, "bad": 0, "window_s": 60},
            )
        when = time.time() - 3600 + seq if ts is None else ts
        return Envelope(self.node, self.epoch, seq, when, kind, data).encode()

    def batch(self, seqs: list[int], *, compress: bool = True) -> bytes:
        return encode_batch([self.envelope(s) for s in seqs], compress=compress)

    def status(self, state: str = "online", **extra: Any) -> bytes:
        body = {
            "v": 1,
            "node": self.node,
            "district": self.district,
            "state": state,
            "ts": utc_iso(time.time()),
            **extra,
        }
        if state == "online":
            body.setdefault("version", "test")
            body.setdefault("epoch", self.epoch)
        import json

        return json.dumps(body).encode()


def link_options(broker: Broker, client_id: str, **extra: Any) -> LinkOptions:
    return LinkOptions(host="127.0.0.1", port=broker.port, client_id=client_id, **extra)


@contextlib.asynccontextmanager
async def publisher(broker: Broker, client_id: str = "light-nodes") -> AsyncIterator[Link]:
    async with Link(link_options(broker, client_id)) as link:
        yield link


@contextlib.asynccontextmanager
async def running_receiver(
    broker: Broker,
    opener: Callable[[], Store],
    *,
    client_id: str = "ioc-receiver-test",
    **options: Any,
) -> AsyncIterator[Receiver]:
    """A receiver in this process, subscribed (SUBACKs received) when the block starts."""
    import asyncio

    receiver = Receiver(
        link_options(broker, client_id, manual_ack=True, keepalive_s=5, receive_maximum=500),
        opener,
        options=ReceiverOptions(prefix=PREFIX, **options),
    )
    async with receiver:
        task = asyncio.create_task(receiver.run())
        try:
            async with asyncio.timeout(30):
                await receiver.subscriber.ready.wait()
            yield receiver
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def eventually(check: Callable[[], Any], *, timeout_s: float = 30.0) -> None:
    """Wait for a condition that a round trip makes true; the bound only ends a broken run."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
