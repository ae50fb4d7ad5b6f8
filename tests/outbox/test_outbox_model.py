"""Property-based test of the queue model: any sequence of put / claim / ack / release /
crash-reopen / expire, with a quota small enough to evict, keeps the outbox's promises."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge_agent.config import OutboxConfig
from edge_agent.contract import Kind, Priority
from edge_agent.outbox import NewEvent, Store

KINDS = [Kind.ALERT, Kind.DETECTION, Kind.READING, Kind.HEALTH]
PRIORITY = {Kind.ALERT: 0, Kind.DETECTION: 1, Kind.READING: 2, Kind.HEALTH: 3}
CONFIG = OutboxConfig(
    max_bytes=64 * 1024,
    max_rows=100,
    ttl_alert_s=3600,
    ttl_event_s=1800,
    ttl_reading_s=600,
    ttl_health_s=60,
)

event = st.tuples(st.sampled_from(KINDS), st.integers(0, 8000), st.booleans())
big_event = st.tuples(st.sampled_from(KINDS), st.integers(3000, 8000), st.just(False))


class OutboxModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-model-"))
        self.path = self.dir / "outbox.sqlite3"
        self.now = 1_000_000.0
        self.store = self._open()
        self.epoch = self.store.epoch
        # Every row the model knows is committed: seq -> (priority, created).
        self.live: dict[int, tuple[int, float]] = {}
        self.acked: set[int] = set()
        self.claimed: set[int] = set()
        self.dropped: dict[int, str] = {}
        self.gaps: list[dict[str, Any]] = []
        self.last_seq = 0
        self.new_gaps: list[dict[str, Any]] = []

    def _open(self) -> Store:
        store = Store(self.path, node="n", config=CONFIG, clock=lambda: self.now)
        store.open()
        return store

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _db_rows(self) -> dict[int, tuple[int, str, float, bytes]]:
        conn = sqlite3.connect(self.path)
        try:
            return {
                seq: (priority, kind, created, payload)
                for seq, priority, kind, created, payload in conn.execute(
                    "SELECT seq, priority, kind, created, payload FROM events"
                )
            }
        finally:
            conn.close()

    def _reconcile(self, allowed: set[str]) -> None:
        """Rows that vanished must be covered by a new gap of an allowed reason."""
        rows = self._db_rows()
        self.new_gaps = []
        for seq, (priority, kind, created, payload) in sorted(rows.items()):
            if seq in self.live or seq in self.acked:
                continue
            # Rows the store made itself: gap reports, newer than anything before them.
            assert kind == "gap", (seq, kind)
            assert seq > self.last_seq
            gap = json.loads(payload)["data"]
            self.gaps.append(gap)
            self.new_gaps.append(gap)
            self.live[seq] = (priority, created)
            self.last_seq = seq
        for seq in [s for s in self.live if s not in rows]:
            priority, _ = self.live.pop(seq)
            cover = [
                g
                for g in self.new_gaps
                if g["first_seq"] <= seq <= g["last_seq"]
                and g["priority"] == Priority(priority).name.lower()
            ]
            assert cover, f"row {seq} vanished without a gap"
            assert cover[0]["reason"] in allowed
            self.dropped[seq] = cover[0]["reason"]
            self.claimed.discard(seq)

    @rule(events=st.lists(event, min_size=1, max_size=30), acks=st.integers(0, 5))
    def put(self, events: list[tuple[Kind, int, bool]], acks: int) -> None:
        batch = [
            NewEvent(
                kind,
                "s",
                self.now,
                {"x": "y" * size, "v": math.nan if bad else 1.0},
                PRIORITY[kind],
            )
            for kind, size, bad in events
        ]
        to_ack = sorted(self.claimed)[:acks]
        results = self.store.write(batch, to_ack)
        for (kind, _, bad), result in zip(events, results, strict=True):
            if bad:
                assert isinstance(result, Exception)
                continue
            assert isinstance(result, int)
            assert result > self.last_seq, "seq must strictly increase"
            self.last_seq = result
            self.live[result] = (PRIORITY[kind], self.now)
        for seq in to_ack:
            self.live.pop(seq, None)
            self.acked.add(seq)
            self.claimed.discard(seq)
        self._reconcile({"quota"})
        for gap in self.new_gaps:
            # Dropped oldest-first within the class, and only once every less important
            # class was empty.
            level = ["alert", "event", "reading", "health"].index(gap["priority"])
            for seq, (priority, _) in self.live.items():
                assert priority <= level or seq in self.claimed, (seq, gap)
                if priority == level:
                    assert seq > gap["last_seq"] or seq in self.claimed

    @rule(events=st.lists(big_event, min_size=10, max_size=25))
    def burst(self, events: list[tuple[Kind, int, bool]]) -> None:
        self.put(events, 0)

    @rule(limit=st.integers(1, 40))
    def claim(self, limit: int) -> None:
        rows = self.store.claim(limit)
        keys = [(r.priority, r.seq) for r in rows]
        assert keys == sorted(keys)
        expected = sorted((p, s) for s, (p, _) in self.live.items() if s not in self.claimed)[
            :limit
        ]
        assert keys == expected
        self.claimed.update(r.seq for r in rows)

    @precondition(lambda self: self.claimed)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.claimed)), unique=True))
        self.store.write([], seqs)
        for seq in seqs:
            self.live.pop(seq, None)
            self.acked.add(seq)
            self.claimed.discard(seq)
        self._reconcile({"quota"})

    @precondition(lambda self: self.claimed)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.claimed)), unique=True))
        self.store.release(seqs)
        self.claimed.difference_update(seqs)

    @rule()
    def crash_and_reopen(self) -> None:
        self.store.close()
        self.store = self._open()
        assert self.store.epoch == self.epoch
        assert self.store.next_seq == self.last_seq + 1
        self.claimed.clear()
        self._reconcile(set())

    @rule(seconds=st.sampled_from([1.0, 20.0, 70.0, 400.0, 2000.0]))
    def expire(self, seconds: float) -> None:
        self.now += seconds
        expired = {
            s for s, (p, created) in self.live.items() if created < self.now - CONFIG.ttl_of(p)
        }
        self.store.expire()
        self._reconcile({"ttl"})
        assert {s for s, reason in self.dropped.items() if reason == "ttl"} >= expired
        for seq in expired:
            assert seq not in self.live

    @invariant()
    def quota_and_counters_agree(self) -> None:
        rows = self._db_rows()
        stats = self.store.stats()
        assert stats["pending_rows"] == len(rows)
        assert stats["pending_bytes"] == sum(len(r[3]) for r in rows.values())
        assert stats["pending_bytes"] <= CONFIG.max_bytes
        assert stats["pending_rows"] <= (CONFIG.max_rows or 0)
        dropped = sum(stats[f"dropped_{r}"] for r in ("ttl", "quota", "disk_full", "corrupt"))
        assert dropped == len(self.dropped)
        assert set(rows) == set(self.live)


OutboxModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOutboxModel = OutboxModel.TestCase
