"""Sensor test helpers: a recording sink, a running poller, pseudo-terminal pairs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from edge_agent.contract import Kind
from edge_agent.health import ComponentHealth, State
from edge_agent.sensors.base import Poller


@dataclass
class Recorder:
    """A sink that keeps every event, and lets a test wait for a condition on them."""

    events: list[tuple[Kind, dict[str, Any], str, float]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, kind: Kind, data: dict[str, Any], stream: str, ts: float) -> None:
        self.events.append((kind, data, stream, ts))
        self._changed.set()

    def readings(self, quantity: str | None = None) -> list[dict[str, Any]]:
        return [
            d
            for k, d, _, _ in self.events
            if k is Kind.READING and (quantity is None or d["quantity"] == quantity)
        ]

    async def wait_for(self, check: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not check():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()


async def wait_state(health: ComponentHealth, state: State, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:  # the health object has no event to wait on; poll it
            if health.state is state:
                return
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(poller: Poller) -> AsyncIterator[Poller]:
    """Enter the poller and run it in a task, as app.py does; cancel and close at the end."""
    async with poller:
        task = asyncio.create_task(poller.run())
        try:
            yield poller
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@dataclass
class Pty:
    """One pseudo-terminal: the driver opens `path`, the test plays the device on `master`."""

    master: int
    slave: int
    path: str
    _cycle: bytes = b""
    _stop: threading.Event = field(default_factory=threading.Event)
    _player: threading.Thread | None = None

    def play(self, cycle: bytes, *, every_s: float = 0.05) -> None:
        """Send `cycle` again and again, like a sensor in active mode (opening a serial port
        flushes what was sent before, so a one-off write could be lost)."""
        self._cycle = cycle
        if self._player is None:
            self._player = threading.Thread(target=self._play, args=(every_s,), daemon=True)
            self._player.start()

    def _play(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            if self._cycle:
                # a full buffer (nobody reading) drops the cycle, as a UART would
                with contextlib.suppress(BlockingIOError):
                    os.write(self.master, self._cycle)

    def close(self) -> None:
        self._stop.set()
        if self._player is not None:
            self._player.join(timeout=5)
        os.close(self.master)
        os.close(self.slave)


def open_pty() -> Pty:
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    os.set_blocking(master, False)
    return Pty(master, slave, os.ttyname(slave))


@pytest.fixture
def pty_device() -> Iterator[Pty]:
    pty = open_pty()
    yield pty
    pty.close()


class PtyLink:
    """Two pseudo-terminals joined like a null-modem cable: bytes written to one end's
    device come out of the other end's device. For a serial server and client."""

    def __init__(self) -> None:
        self.a = open_pty()
        self.b = open_pty()
        self._stop = os.pipe()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        peer = {self.a.master: self.b.master, self.b.master: self.a.master}
        while True:
            ready, _, _ = select.select([self.a.master, self.b.master, self._stop[0]], [], [])
            if self._stop[0] in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                os.write(peer[fd], data)

    def close(self) -> None:
        os.write(self._stop[1], b"x")
        self._thread.join(timeout=5)
        self.a.close()
        self.b.close()
        for fd in self._stop:
            os.close(fd)


@pytest.fixture
def pty_link() -> Iterator[PtyLink]:
    link = PtyLink()
    yield link
    link.close()
