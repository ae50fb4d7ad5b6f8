"""Sync test helpers: a real outbox file, a running Sync, and the provincial receiver."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.audit import Auditor
from edge_agent.config import MqttConfig, OutboxConfig
from edge_agent.contract import Kind, reading_data
from edge_agent.health import ComponentHealth
from edge_agent.ioc.fleet import Reader
from edge_agent.ioc.receiver import Receiver, ReceiverOptions
from edge_agent.ioc.sqlite_store import SqliteStore
from edge_agent.outbox import Outbox
from edge_agent.sync import Applied, NodeInfo, Sync
from edge_agent.sync.link import Link, LinkOptions, Message
from tests.conftest import Broker, stop_process

NODE = "node-a"
DISTRICT = "d1"
PREFIX = "ioc/v1"


class Handlers:
    """The command side of a node in tests: real data, no agent around it."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.applied: list[dict[str, Any]] = []

    def status(self) -> dict[str, Any]:
        return {"node": {"id": NODE}, "state": "ok"}

    def config_get(self) -> dict[str, Any]:
        return {"mqtt": {"password": "**********"}}

    async def config_set(self, changes: dict[str, Any]) -> Applied:
        if "bad.key" in changes:
            raise ValueError("bad.key: unknown key")
        return Applied(
            {"changed": sorted(changes)}, then=lambda route: self.applied.append(changes)
        )

    async def snapshot(self, camera: str) -> bytes:
        if camera != "gate":
            raise LookupError(f"no camera named {camera!r}")
        return b"\xff\xd8\xff\xe0fakejpeg\xff\xd9"

    async def outbox_stats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.outbox.stats)


def mqtt_config(broker: Broker, **overrides: Any) -> MqttConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "keepalive_s": 5,
        "backoff_min_s": 0.1,
        "backoff_max_s": 1.0,
        "connect_timeout_s": 5.0,
        "rate_messages_per_s": 0,
        "rate_bytes_per_s": 0,
    }
    values.update(overrides)
    return MqttConfig(**values)


@contextlib.asynccontextmanager
async def open_outbox(path: Path) -> AsyncIterator[Outbox]:
    outbox = Outbox(
        path / "outbox.sqlite3",
        node=NODE,
        config=OutboxConfig(synchronous="NORMAL"),
        health=ComponentHealth("outbox"),
    )
    async with outbox:
        yield outbox


@contextlib.asynccontextmanager
async def running_sync(
    config: MqttConfig,
    outbox: Outbox,
    *,
    state_dir: Path | None = None,
    node: str = NODE,
    auditor: Auditor | None = None,
) -> AsyncIterator[Sync]:
    sync = Sync(
        config,
        node=NodeInfo(node, DISTRICT, "test", "hash0", ("sensors",)),
        outbox=outbox,
        handlers=Handlers(outbox),
        health=ComponentHealth("sync"),
        state_dir=state_dir,
        auditor=auditor,
    )
    async with sync:
        task = asyncio.create_task(sync.run())
        try:
            yield sync
        finally:
            # Whatever happened, the component must still be running: a command that
            # stopped it would show here.
            assert not task.done(), task.exception() if not task.cancelled() else "cancelled"
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
def agents() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Agent processes a test starts; killed (and their pipes closed) after it."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop_process(process)


def client_options(broker: Broker, client_id: str, **extra: Any) -> LinkOptions:
    return LinkOptions(host="127.0.0.1", port=broker.port, client_id=client_id, **extra)


@contextlib.asynccontextmanager
async def running_receiver(
    broker: Broker, path: Path, **extra: Any
) -> AsyncIterator[tuple[Receiver, Reader]]:
    """The provincial receiver (persistent session "ioc-receiver", manual acks) storing into
    the SQLite file `path`, subscribed when the block starts; with a reader of that file."""
    receiver = Receiver(
        client_options(broker, "ioc-receiver", manual_ack=True, **extra),
        lambda: SqliteStore(path, synchronous="NORMAL"),
        # Back within a tenth of a second of a broker restart, before any node (whose first
        # retry waits at least half a second), so that nothing is published unseen.
        options=ReceiverOptions(prefix=PREFIX, reconnect_min_s=0.05, reconnect_max_s=0.1),
    )
    async with receiver:
        task = asyncio.create_task(receiver.run())
        reader: Reader | None = None
        try:
            async with asyncio.timeout(30):
                await receiver.subscriber.ready.wait()
            reader = Reader.open(path=path)
            yield receiver, reader
        finally:
            if reader is not None:
                reader.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def receiving(broker: Broker, **extra: Any) -> AsyncIterator[Reader]:
    """The provincial receiver subscribed to every node's data and status, into a file of
    its own; yields a reader of what it stored (`count()`, `seqs(node, epoch)`)."""
    with tempfile.TemporaryDirectory() as directory:
        async with running_receiver(broker, Path(directory) / "ioc.sqlite3", **extra) as (
            _receiver,
            reader,
        ):
            yield reader


@contextlib.asynccontextmanager
async def listening(
    broker: Broker, topic_filter: str, client_id: str = "listener", **extra: Any
) -> AsyncIterator[list[Message]]:
    messages: list[Message] = []
    async with Link(client_options(broker, client_id, **extra), on_message=messages.append) as link:
        await link.subscribe(topic_filter, qos=1)  # returns after the SUBACK
        yield messages


async def eventually(
    check: Callable[[], bool], *, timeout_s: float = 20.0, period_s: float = 0.02
) -> None:
    """Wait for a condition; the timeout only bounds a broken run, it asserts nothing."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(period_s)


async def put_readings(outbox: Outbox, count: int, *, stream: str = "reading") -> list[int]:
    return [
        await outbox.put(
            Kind.READING,
            reading_data(sensor="s1", quantity="temperature", value=20.0 + i % 10, unit="Cel"),
            stream=stream,
        )
        for i in range(count)
    ]
