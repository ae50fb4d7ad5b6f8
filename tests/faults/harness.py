"""The end-to-end fault harness: real agents as subprocesses, a real broker, the real receiver,
and an account of every event a node committed.

The pass criterion of every scenario is the same and is checked in the receiver's store: for
each node and epoch, every seq from 1 to the epoch's last is stored once, unless a `gap` the
node sent declares it lost. Figures each scenario measures are appended to the JSON lines
file named by `$EDGE_AGENT_FAULTS_REPORT` (bench/faults collects them into
docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from edge_agent.contract import parse_iso, utc_iso
from edge_agent.outbox import OutboxReader
from tests.conftest import AgentProcess, agent_command, agent_env, free_port

# CI runs the scenarios small; `bench/faults` sets EDGE_AGENT_FAULTS_SCALE=full.
FULL = os.environ.get("EDGE_AGENT_FAULTS_SCALE", "ci") == "full"


def scale(ci: int, full: int) -> int:
    return full if FULL else ci


def report(scenario: str, **figures: Any) -> None:
    """Keep a scenario's figures for docs/reliability.md (and print them for the log)."""
    line = {"scenario": scenario, "scale": "full" if FULL else "ci", **figures}
    print(json.dumps(line))
    path = os.environ.get("EDGE_AGENT_FAULTS_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    """Poll `check`; the timeout only bounds a broken run (it is not a performance test)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s:.0f} s")
        time.sleep(0.1)


def agent_config(
    node: str,
    state_dir: Path,
    broker_port: int,
    *,
    sensors: int = 2,
    interval_s: float = 0.1,
    keepalive_s: int = 5,
    protocol: str = "5",
    web_port: int = 0,
    mqtt: str = "",
    extra: str = "",
) -> str:
    """Simulated sensors at a high rate (each read gives six quantities), no camera."""
    lines = [
        "cameras = []",
        "[node]",
        f'id = "{node}"',
        'district = "faults"',
        "[paths]",
        f'state_dir = "{state_dir}"',
        "[web]",
        f"port = {web_port}",
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {broker_port}",
        f'protocol = "{protocol}"',
        f"keepalive_s = {keepalive_s}",
        "connect_timeout_s = 5.0",
        "backoff_min_s = 0.2",
        "backoff_max_s = 2.0",
        mqtt,
        "[outbox]",
        'synchronous = "FULL"',
    ]
    for i in range(sensors):
        lines += [
            "[[sensors]]",
            'kind = "simulated"',
            f'name = "sim-{i}"',
            f"interval_s = {interval_s}",
            f"seed = {i}",
        ]
    return "\n".join(lines) + "\n" + extra


@dataclass
class Node:
    """One agent: its config and state dir survive restarts, its process does not."""

    name: str
    directory: Path
    broker_port: int
    start_process: Callable[..., AgentProcess]
    config_extra: dict[str, Any] = field(default_factory=dict)
    process: AgentProcess | None = None
    web_port: int = 0

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.web_port = free_port()
        self.config = self.directory / "edge-agent.toml"
        self.config.write_text(
            agent_config(
                self.name,
                self.state_dir,
                self.broker_port,
                web_port=self.web_port,
                **self.config_extra,
            )
        )

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def outbox(self) -> Path:
        return self.state_dir / "outbox.sqlite3"

    def start(self, env: dict[str, str] | None = None) -> AgentProcess:
        """Start the agent and return once it runs (its own word in its log: a round trip;
        the outbox file of its previous life says nothing about this one)."""
        self.process = self.start_process(
            "run", "--config", str(self.config), env=env or agent_env(mqtt=True)
        )
        self.process.wait_for_output(r"running as node", timeout_s=120)
        return self.process

    def kill(self) -> None:
        assert self.process is not None
        self.process.stop(9)

    def stop(self) -> int:
        assert self.process is not None
        return self.process.stop()

    def rss(self) -> int:
        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def stats(self) -> dict[str, Any]:
        """The outbox's counters, read-only (safe while the agent runs)."""
        if not self.outbox.exists():
            return {"pending_rows": 0, "last_seq": 0, "epoch": None}
        try:
            with OutboxReader(self.outbox) as reader:
                return dict(reader.stats())
        except Exception:  # the file is being created or quarantined right now
            return {"pending_rows": -1, "last_seq": 0, "epoch": None}

    def committed(self) -> int:
        """The last seq committed; raises if the agent died instead of running."""
        if self.process is not None and self.process.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.process.process.returncode}:\n"
                f"{self.process.output[-3000:]}"
            )
        return int(self.stats().get("last_seq") or 0)


class Receiver:
    """`edge-agent ioc receive` as a subprocess, storing into its SQLite file."""

    def __init__(self, directory: Path, broker_port: int, start: Callable[..., AgentProcess]):
        self.db = directory / "ioc.sqlite3"
        self.broker_port = broker_port
        self.metrics_port = free_port()
        self._start = start
        self._probes = 0
        self.protocol = "5"
        self.process: AgentProcess | None = None

    def start(self) -> None:
        self.process = self._start(
            "ioc",
            "receive",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.broker_port),
            "--protocol",
            self.protocol,
            "--db",
            str(self.db),
            "--client-id",
            "ioc-faults",
            "--metrics-port",
            str(self.metrics_port),
        )
        self.wait_subscribed()

    def wait_subscribed(self) -> None:
        """Return once a probe published through the broker is stored: a round trip."""
        assert self.process is not None
        self._probes += 1
        node = f"probe-{self._probes}"
        status = json.dumps(
            {"v": 1, "node": node, "district": "faults", "state": "online", "ts": utc_iso(0)}
        )
        topic = f"ioc/v1/faults/{node}/status"
        version = "mqttv5" if self.protocol == "5" else "mqttv311"
        deadline = time.monotonic() + 60
        while not self._query("SELECT 1 FROM node_status WHERE node=?", (node,)):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver not subscribed:\n{self.process.output}")
            command = ["mosquitto_pub", "-p", str(self.broker_port), "-V", version, "-q", "1"]
            run([*command, "-t", topic, "-m", status], check=False)
            time.sleep(0.2)

    def duplicates(self) -> int | None:
        """Events the receiver dropped as already stored (from its /metrics)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("ioc_duplicates_total "):
                return int(float(line.split()[1]))
        return None

    def stop(self) -> dict[str, Any]:
        assert self.process is not None
        summary = {"duplicates": self.duplicates()}
        self.process.stop()
        return summary

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            try:
                return list(conn.execute(sql, tuple(args)))
            except sqlite3.OperationalError:
                return []

    def keys(self, node: str) -> dict[str, set[int]]:
        """epoch -> the seqs stored for `node` (readings and every other kind)."""
        result: dict[str, set[int]] = {}
        rows = self._query(
            "SELECT epoch, seq FROM events WHERE node=? UNION ALL"
            " SELECT epoch, seq FROM readings WHERE node=?",
            (node, node),
        )
        for epoch, seq in rows:
            result.setdefault(str(epoch), set()).add(int(seq))
        return result

    def gaps(self, node: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT epoch, seq, data FROM events WHERE node=? AND kind='gap'", (node,)
        )
        return [
            {"epoch": str(epoch), "seq": int(seq), **json.loads(data)} for epoch, seq, data in rows
        ]

    def times(self, node: str) -> list[tuple[int, float]]:
        """(seq, ts) of the node's stored events in seq order (ts: epoch seconds)."""
        rows = self._query("SELECT seq, ts FROM all_events WHERE node=? ORDER BY seq", (node,))
        return [(int(seq), parse_iso(str(ts))) for seq, ts in rows]

    def arrival(self, node: str) -> list[tuple[int, str]]:
        """(seq, kind) of the node's events other than readings, in the order they arrived."""
        rows = self._query(
            "SELECT seq, kind FROM events WHERE node=? ORDER BY received_at, seq", (node,)
        )
        return [(int(seq), str(kind)) for seq, kind in rows]

    def stored(self, node: str, epoch: str) -> int:
        return len(self.keys(node).get(epoch, set()))


@dataclass
class Account:
    node: str
    committed: dict[str, int]  # epoch -> last seq committed
    stored: int
    declared: int  # seqs a gap declares lost
    missing: dict[str, list[int]]  # epoch -> seqs neither stored nor declared
    sent: int = 0  # events committed, all epochs (a new epoch's seqs start above the old)

    @property
    def ok(self) -> bool:
        return not any(self.missing.values())


def _declared(gaps: list[dict[str, Any]], epoch: str, last: int) -> set[int]:
    lost: set[int] = set()
    for gap in gaps:
        applies = gap.get("previous_epoch") or gap["epoch"]
        if applies != epoch:
            continue
        first, final = gap.get("first_seq"), gap.get("last_seq")
        if gap.get("reason") == "corrupt" or (gap.get("previous_epoch") and final is None):
            # The old file is gone (moved aside) or nothing bounds the loss: the node cannot
            # say which rows it held, so the gap covers whatever of that epoch never arrived.
            lost |= set(range(1, last + 1))
        elif isinstance(final, int):
            lost |= set(range(first if isinstance(first, int) else 1, final + 1))
    return lost


def _first_seq(gaps: list[dict[str, Any]], epoch: str) -> int:
    """The epoch's first seq: a new epoch opens with its alert (F) and its gap (F + 1), its
    seqs continuing above every seq the node used before."""
    opening = [g["seq"] for g in gaps if g["epoch"] == epoch and g.get("previous_epoch")]
    return max(1, min(opening) - 1) if opening else 1


def pending_seqs(node: Node) -> set[int]:
    """Seqs still waiting in the node's outbox (not lost: they go out on the next link)."""
    if not node.outbox.exists():
        return set()
    with contextlib.closing(sqlite3.connect(f"file:{node.outbox}?mode=ro", uri=True)) as conn:
        try:
            # A row holds the events of one read: seqs `seq`..`last_seq`.
            rows = conn.execute("SELECT seq, last_seq FROM events").fetchall()
            return {s for first, last in rows for s in range(int(first), int(last) + 1)}
        except sqlite3.OperationalError:
            return set()


def account(
    node: Node,
    receiver: Receiver,
    *,
    upto: int | None = None,
    known: dict[str, int] | None = None,
) -> Account:
    """Every seq the node committed (up to `upto` in the current epoch, when given), stored
    at the receiver, declared lost in a gap, or still pending in the node's outbox. `known`
    gives epochs' last seqs the test saw itself (an epoch whose file was set aside)."""
    stats = node.stats()
    pending = pending_seqs(node)
    keys = receiver.keys(node.name)
    gaps = receiver.gaps(node.name)
    last_by_epoch = {epoch: max(seqs) for epoch, seqs in keys.items()}
    current = str(stats["epoch"]) if stats.get("epoch") else None
    if current is not None:
        last_by_epoch[current] = max(last_by_epoch.get(current, 0), int(stats["last_seq"]))
        if upto is not None:
            last_by_epoch[current] = min(last_by_epoch[current], upto)
    for gap in gaps:
        previous = gap.get("previous_epoch")
        if previous and isinstance(gap.get("previous_last_seq"), int):
            last_by_epoch[previous] = max(last_by_epoch.get(previous, 0), gap["previous_last_seq"])
    for epoch, last in (known or {}).items():
        last_by_epoch[epoch] = max(last_by_epoch.get(epoch, 0), last)
    missing: dict[str, list[int]] = {}
    declared = 0
    sent = 0
    for epoch, last in last_by_epoch.items():
        lost = _declared(gaps, epoch, last)
        have = keys.get(epoch, set())
        declared += len(lost - have)
        waiting = pending if epoch == current else set()
        first = _first_seq(gaps, epoch)
        sent += max(0, last - first + 1)
        missing[epoch] = sorted(set(range(first, last + 1)) - have - lost - waiting)
    return Account(
        node=node.name,
        committed=last_by_epoch,
        stored=sum(len(s) for s in keys.values()),
        declared=declared,
        missing=missing,
        sent=sent,
    )


def settle(node: Node, receiver: Receiver, timeout_s: float = 180.0) -> Account:
    """Wait until everything the node had committed when called reached the receiver (or a
    gap declared it) while it runs, then stop it cleanly and wait for the rest: every seq it
    ever committed is stored, declared lost, or still in its outbox (on its way). Raises
    with the whole account when that does not happen."""
    stats = node.stats()
    target = int(stats.get("last_seq") or 0)
    epoch = stats.get("epoch")

    def arrived() -> bool:
        if node.stats().get("epoch") != epoch:
            return account(node, receiver).ok
        acc = account(node, receiver, upto=target)
        return acc.ok and not (pending_seqs(node) & set(range(1, target + 1)))

    def everything() -> bool:
        return account(node, receiver).ok

    for check, what in (
        (arrived, f"{node.name} delivered up to seq {target} while running"),
        (everything, f"{node.name} delivered everything after a clean stop"),
    ):
        try:
            wait_until(check, what, timeout_s)
        except AssertionError as exc:
            log = node.process.output[-3000:] if node.process else ""
            raise AssertionError(
                f"{exc}\n{describe(account(node, receiver))}\n"
                f"outbox: {node.stats()}\nagent log tail:\n{log}\nreceiver log tail:\n"
                f"{receiver.process.output[-2000:] if receiver.process else ''}"
            ) from None
        if check is arrived:
            assert node.stop() == 0, node.process.output[-3000:] if node.process else ""
    return account(node, receiver)


def describe(acc: Account) -> str:
    parts = [f"{epoch[:8]}: {len(seqs)} missing {seqs[:10]}" for epoch, seqs in acc.missing.items()]
    return f"{acc.node}: committed {acc.committed}, stored {acc.stored}; " + "; ".join(parts)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)


def outbox_stats_cli(node: Node) -> dict[str, Any]:
    result = run(
        agent_command("outbox", "stats", "--config", str(node.config)), env=agent_env(), check=True
    )
    return dict(json.loads(result.stdout))
