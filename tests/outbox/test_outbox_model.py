"""Property-based test of the queue model: any sequence of put / claim / ack / release /
close-reopen / expire, with a quota small enough to evict and reads packed into shared rows,
keeps the outbox's promises."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge_agent.config import OutboxConfig
from edge_agent.contract import Kind
from edge_agent.outbox import NewEvent, Store
from edge_agent.outbox.encode import TailEncoder
from edge_agent.outbox.packing import unpack

KINDS = [Kind.ALERT, Kind.DETECTION, Kind.READING, Kind.HEALTH]
PRIORITY = {Kind.ALERT: 0, Kind.DETECTION: 1, Kind.READING: 2, Kind.HEALTH: 3}
CONFIG = OutboxConfig(
    max_bytes=64 * 1024,
    max_rows=100,
    row_max_events=4,
    ttl_alert_s=3600,
    ttl_event_s=1800,
    ttl_reading_s=600,
    ttl_health_s=60,
)
CLASSES = ["alert", "event", "reading", "health"]

# (kind, padding, stream): readings on one stream at one time share rows of up to 4.
event = st.tuples(st.sampled_from(KINDS), st.integers(0, 8000), st.sampled_from(["a", "b"]))
big_event = st.tuples(st.sampled_from(KINDS), st.integers(3000, 8000), st.just("a"))


class OutboxModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-model-"))
        self.path = self.dir / "outbox.sqlite3"
        self.now = 1_000_000.0
        self.tails = TailEncoder()
        self.store = self._open()
        self.epoch = self.store.epoch
        # Every event the model knows is committed and not acked: seq -> (priority, created).
        self.live: dict[int, tuple[int, float]] = {}
        self.acked: dict[int, tuple[int, float]] = {}
        self.claimed: set[int] = set()
        self.dropped: dict[int, str] = {}
        self.gaps: dict[int, dict[str, Any]] = {}
        self.last_seq = 0

    def _open(self) -> Store:
        store = Store(self.path, node="n", config=CONFIG, clock=lambda: self.now)
        store.open()
        return store

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _db(self) -> tuple[dict[int, tuple[int, str, bytes]], dict[int, int], int]:
        """Events (seq -> priority, kind, envelope), rows (first -> last seq), stored bytes."""
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute(
                "SELECT seq, last_seq, priority, kind, payload FROM events"
            ).fetchall()
        finally:
            conn.close()
        events = {
            seq + i: (priority, kind, body)
            for seq, last, priority, kind, payload in rows
            for i, body in enumerate(unpack(payload, last - seq + 1))
        }
        return events, {r[0]: r[1] for r in rows}, sum(len(r[4]) for r in rows)

    def _reconcile(self, allowed: set[str]) -> None:
        """Events that vanished must be covered by a gap of an allowed reason."""
        events, _, _ = self._db()
        for seq, (priority, kind, body) in sorted(events.items()):
            if kind == "gap":  # new, or extended since: the store's own reports
                self.gaps[seq] = json.loads(body)["data"]
            if seq in self.live or seq in self.acked:
                continue
            assert kind == "gap", (seq, kind)
            assert seq > self.last_seq
            self.live[seq] = (priority, self.now)
            self.last_seq = seq
        for seq in [s for s in self.live if s not in events]:
            priority, _ = self.live.pop(seq)
            cover = [
                g
                for g in self.gaps.values()
                if g["first_seq"] <= seq <= g["last_seq"] and g["priority"] == CLASSES[priority]
            ]
            assert cover, f"event {seq} vanished without a gap"
            assert cover[0]["reason"] in allowed | {self.dropped.get(seq, "")}
            self.dropped[seq] = cover[0]["reason"]
            self.claimed.discard(seq)
        for seq in [s for s in self.acked if s not in events]:
            del self.acked[seq]  # its whole row was acked: deleted

    @rule(events=st.lists(event, min_size=1, max_size=30), acks=st.integers(0, 5))
    def put(self, events: list[tuple[Kind, int, str]], acks: int) -> None:
        batch = [
            NewEvent(
                str(kind),
                stream,
                self.now,
                PRIORITY[kind],
                self.tails.encode(self.now, str(kind), {"x": "y" * size}),
            )
            for kind, size, stream in events
        ]
        to_ack = sorted(self.claimed)[:acks]
        seqs = self.store.write(batch, to_ack)
        assert sorted(seqs) == list(range(self.last_seq + 1, self.last_seq + 1 + len(batch)))
        for (kind, _, _), seq in zip(events, seqs, strict=True):
            self.live[seq] = (PRIORITY[kind], self.now)
        self.last_seq = max(seqs)
        self._acked(to_ack)
        self._reconcile({"quota"})
        for gap in self.gaps.values():
            # Dropped oldest-first within the class, and only once every less important
            # class was empty.
            level = CLASSES.index(gap["priority"])
            for seq, (priority, _) in self.live.items():
                assert priority <= level or seq > gap["last_seq"], (seq, gap)

    def _acked(self, seqs: list[int]) -> None:
        for seq in seqs:
            self.acked[seq] = self.live.pop(seq)
            self.claimed.discard(seq)

    @rule(events=st.lists(big_event, min_size=10, max_size=25))
    def burst(self, events: list[tuple[Kind, int, str]]) -> None:
        self.put(events, 0)

    @rule(limit=st.integers(1, 40))
    def claim(self, limit: int) -> None:
        rows = self.store.claim(limit)
        keys = [(r.priority, r.seq) for r in rows]
        assert keys == sorted(keys)
        expected = sorted((p, s) for s, (p, _) in self.live.items() if s not in self.claimed)
        assert keys == expected[:limit]
        for row in rows:
            assert json.loads(row.payload)["seq"] == row.seq
        self.claimed.update(r.seq for r in rows)

    @precondition(lambda self: self.claimed)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.claimed)), unique=True))
        self.store.write([], seqs)
        self._acked(seqs)
        self._reconcile({"quota"})

    @precondition(lambda self: self.claimed)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.claimed)), unique=True))
        self.store.release(seqs)
        self.claimed.difference_update(seqs)

    @rule()
    def close_and_reopen(self) -> None:
        self.store.close(clean=True)
        self.store = self._open()
        assert self.store.epoch == self.epoch
        assert self.store.totals.last_seq == self.last_seq
        self.claimed.clear()
        # A partly acked row is sent again whole: its acked events are pending once more.
        events, _, _ = self._db()
        for seq in [s for s in self.acked if s in events]:
            self.live[seq] = self.acked.pop(seq)
        self._reconcile(set())

    @rule(seconds=st.sampled_from([1.0, 20.0, 70.0, 400.0, 2000.0]))
    def expire(self, seconds: float) -> None:
        self.now += seconds
        expired = {
            s for s, (p, created) in self.live.items() if created < self.now - CONFIG.ttl_of(p)
        }
        self.store.expire()
        self._reconcile({"ttl"})
        for seq in expired:
            assert seq not in self.live

    @invariant()
    def quota_and_counters_agree(self) -> None:
        events, rows, stored = self._db()
        stats = self.store.totals.committed()
        assert stats["pending_rows"] == len(events)
        assert stats["stored_rows"] == len(rows)
        assert stats["pending_bytes"] == stored
        assert stats["pending_bytes"] <= CONFIG.max_bytes
        assert stats["pending_rows"] <= (CONFIG.max_rows or 0)
        dropped = sum(stats[f"dropped_{r}"] for r in ("ttl", "quota", "disk_full", "corrupt"))
        assert dropped == len(self.dropped)
        assert set(events) == set(self.live) | set(self.acked)
        for seq in self.acked:
            # An acked event stays only in a row that still carries an unacked one.
            first = max(s for s in rows if s <= seq)
            assert any(s in self.live for s in range(first, rows[first] + 1)), seq


OutboxModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOutboxModel = OutboxModel.TestCase
