"""An agent under test as a child process, with its cost counted over all its lives.

CPU seconds and bytes written come from the process tree: the agent (its own counters
include the children it has reaped) plus any live descendants. A stopped agent is read as a
zombie, after it died and before it is reaped, so nothing it did up to its last instant
goes uncounted, not even the writes of a SIGTERM shutdown.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Cost:
    cpu_s: float = 0.0
    write_bytes: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.cpu_s + other.cpu_s, self.write_bytes + other.write_bytes)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.cpu_s - other.cpu_s, self.write_bytes - other.write_bytes)


def _own_cost(process: psutil.Process) -> Cost:
    cpu = process.cpu_times()
    io = process.io_counters()
    return Cost(cpu.user + cpu.system + cpu.children_user + cpu.children_system, io.write_bytes)


def tree_cost(pid: int) -> Cost:
    root = psutil.Process(pid)
    total = _own_cost(root)
    for child in root.children(recursive=True):
        try:
            total += _own_cost(child)
        except psutil.NoSuchProcess:
            # Gone since the listing: the root's counters have it once it is reaped.
            continue
    return total


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    total = int(root.memory_info().rss)
    for child in root.children(recursive=True):
        try:
            total += int(child.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return total


class Agent:
    """One agent: start, signal, restart; its output kept (the tail) for diagnostics."""

    def __init__(self, name: str, command: list[str], *, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.lives = 0
        self.forced_kills = 0
        self._spent = Cost()  # of the lives that ended
        self._tail: collections.deque[str] = collections.deque(maxlen=60)
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.started_at = time.time()
        self.lives += 1
        # The pipe is drained by the benchmark, so the agent's log lines cost it a write to a
        # pipe, never to disk, as under journald.
        self._reader = threading.Thread(target=self._drain, args=(self.process,), daemon=True)
        self._reader.start()

    def _drain(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._tail.append(line.decode(errors="replace").rstrip())

    def cost(self) -> Cost:
        """Everything spent so far, over every life (never reaps: a dead agent stays readable)."""
        if self.process is None:
            return self._spent
        return self._spent + (self._live_cost(self.process.pid) or Cost())

    def alive(self) -> bool:
        return self.process is not None and not self._wait_unreaped(self.process.pid, 0)

    def rss(self) -> int:
        return tree_rss(self.pid)

    def stop(self, sig: signal.Signals, *, timeout_s: float = 30.0) -> float:
        """Send `sig`, wait for the exit (SIGKILL after `timeout_s`); seconds it took."""
        process = self.process
        if process is None:
            return 0.0
        sent = time.monotonic()
        if not self._wait_unreaped(process.pid, 0):
            process.send_signal(sig)
            if not self._wait_unreaped(process.pid, timeout_s):
                self.forced_kills += 1
                process.kill()
                self._wait_unreaped(process.pid, None)
        self._spent += self._live_cost(process.pid) or Cost()
        took = time.monotonic() - sent
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self.process = None
        return took

    def restart(self, sig: signal.Signals) -> float:
        took = self.stop(sig)
        self.start()
        return took

    def tail(self) -> str:
        return "\n".join(self._tail)

    @staticmethod
    def _live_cost(pid: int) -> Cost | None:
        try:
            return tree_cost(pid)
        except psutil.NoSuchProcess:
            return None

    @staticmethod
    def _wait_unreaped(pid: int, timeout_s: float | None) -> bool:
        """Wait until `pid` has exited, leaving it a zombie so its counters can still be read."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            if info is not None:
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def kill_quietly(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait()
