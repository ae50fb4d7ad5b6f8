"""A TCP fault proxy between the agent and the broker: cut, black-hole, delay, throttle, lose
(stall like a retransmission) and reset, switched at run time from the test.

It runs its own event loop on a thread, so synchronous tests and asyncio tests drive it the
same way. It forwards bytes, never parses MQTT: what the agent meets is what a bad link does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

CHUNK = 16 * 1024


@dataclass(frozen=True)
class Faults:
    """The link's condition. `blackhole`: connections stay open but nothing passes, in
    either direction, and no RST or FIN comes (what a dead 4G cell does). `refuse`: new
    connections are reset at once. `delay_s` one way, per chunk. `rate_bps` per direction
    (bytes/s, 0 = unlimited). `loss`: the chance a chunk stalls for `stall_s` (TCP loses
    nothing; a lost segment costs a retransmission timeout). `reset_every_s`: every live
    connection is reset on that beat (0 = never)."""

    blackhole: bool = False
    refuse: bool = False
    delay_s: float = 0.0
    rate_bps: float = 0.0
    loss: float = 0.0
    stall_s: float = 0.5
    reset_every_s: float = 0.0


@dataclass
class Counters:
    connections: int = 0
    refused: int = 0
    resets: int = 0
    bytes_up: int = 0  # agent -> broker
    bytes_down: int = 0  # broker -> agent


@dataclass(eq=False)
class _Pipe:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), not FIN: what a middlebox dropping state does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listens on 127.0.0.1:`port` (0 = any free port) and forwards to `target_port`."""

    def __init__(self, target_port: int, *, port: int = 0, seed: int = 1) -> None:
        self.target_port = target_port
        self.counters = Counters()
        self._faults = Faults()
        self._rand = random.Random(seed)
        self._pipes: set[_Pipe] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fault-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._want_port = port
        self.port = 0
        self._resetter: asyncio.Task[None] | None = None
        self._unblocked = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        if not self.port:
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._shutdown)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _start(self) -> None:
        self._unblocked.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._want_port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for pipe in self._pipes for t in pipe.tasks]
        for pipe in list(self._pipes):
            self._drop(pipe, reset=True)
        if self._resetter is not None:
            self._resetter.cancel()
            tasks.append(self._resetter)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # let aborted transports finish closing
        self._loop.call_soon(self._loop.stop)

    def _call(self, coro_fn: object) -> None:
        future = asyncio.run_coroutine_threadsafe(coro_fn(), self._loop)  # type: ignore[operator]
        future.result(10)

    # -- switching ---------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    def set(self, **changes: float | bool) -> None:
        """Change the link's condition for live and new connections."""

        async def apply() -> None:
            self._faults = replace(self._faults, **changes)  # type: ignore[arg-type]
            if self._faults.blackhole:
                self._unblocked.clear()
            else:
                self._unblocked.set()
            if self._resetter is not None:
                self._resetter.cancel()
                self._resetter = None
            if self._faults.reset_every_s > 0:
                self._resetter = asyncio.create_task(self._reset_beat())

        self._call(apply)

    def heal(self) -> None:
        """Back to a clean link (live connections that survived keep going)."""
        self.set(**{name: value for name, value in vars(Faults()).items()})

    def cut(self) -> None:
        """Reset every live connection and refuse new ones until `heal()`."""
        self.set(refuse=True)
        self.reset_all()

    def reset_all(self) -> None:
        async def reset() -> None:
            for pipe in list(self._pipes):
                self._drop(pipe, reset=True)
                self.counters.resets += 1

        self._call(reset)

    @contextlib.contextmanager
    def condition(self, **changes: float | bool) -> Iterator[None]:
        self.set(**changes)
        try:
            yield
        finally:
            self.heal()

    # -- forwarding --------------------------------------------------------------------

    async def _reset_beat(self) -> None:
        while True:
            await asyncio.sleep(self._faults.reset_every_s)
            for pipe in list(self._pipes):
                self._drop(pipe, reset=True)
                self.counters.resets += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._faults.refuse:
            self.counters.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self.counters.refused += 1
            _reset(writer)
            return
        self.counters.connections += 1
        pipe = _Pipe(writer, up_writer)
        self._pipes.add(pipe)
        pipe.tasks = [
            asyncio.create_task(self._forward(reader, up_writer, pipe, up=True)),
            asyncio.create_task(self._forward(up_reader, writer, pipe, up=False)),
        ]

    async def _forward(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pipe: _Pipe,
        *,
        up: bool,
    ) -> None:
        try:
            while True:
                data = await source.read(CHUNK)
                if not data:
                    break
                await self._unblocked.wait()  # a black hole swallows nothing, it holds
                faults = self._faults
                if faults.loss and self._rand.random() < faults.loss:
                    await asyncio.sleep(faults.stall_s)
                if faults.delay_s:
                    await asyncio.sleep(faults.delay_s)
                if faults.rate_bps:
                    await asyncio.sleep(len(data) / faults.rate_bps)
                await self._unblocked.wait()
                if pipe not in self._pipes:
                    return
                if up:
                    self.counters.bytes_up += len(data)
                else:
                    self.counters.bytes_down += len(data)
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if pipe in self._pipes:
                self._drop(pipe, reset=False)

    def _drop(self, pipe: _Pipe, *, reset: bool) -> None:
        self._pipes.discard(pipe)
        for writer in (pipe.client, pipe.upstream):
            if reset:
                _reset(writer)
            else:
                writer.close()
        for task in pipe.tasks:
            if task is not asyncio.current_task():
                task.cancel()
