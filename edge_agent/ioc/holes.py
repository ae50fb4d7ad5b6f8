"""Holes: seqs missing from a node's sequence for longer than the hole timeout.

Computed from the database, not from what one receiver saw: with a shared subscription each
receiver sees only part of every stream, and after a restart it has seen nothing. Per
`(node, epoch)` the `sequences` table keeps the highest seq seen, the highest contiguous seq
(everything at or below it stored, or declared dropped by the node), a scan frontier and a
version that every write bumps. A scan looks only at sequences that moved: it reads the
missing ranges past the frontier with one window query, leaves out what the node declared
itself (`gap` events, table `declared_gaps`) and records the rest in `holes` as `pending`.
A pending hole still missing after the timeout becomes `open` (reported: metrics, fleet,
`ioc nodes`); one that fills before is deleted, since reordering is normal (a backlog drains
its lower priorities last). An open hole whose events arrive later, or that a gap event
declares, is `closed` (`closed_by` `arrived` or `declared`); what is still missing of it
stays open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edge_agent.ioc.store import HoleReport

Range = tuple[int, int]


@dataclass(frozen=True)
class SequenceState:
    node: str
    epoch: str
    scanned_seq: int
    max_seq: int
    version: int


@dataclass(frozen=True)
class TrackedHole:
    id: int
    first_seq: int
    last_seq: int
    state: str  # pending or open
    noticed_at: float
    opened_at: float | None


class HoleTx(Protocol):
    """The primitives a store offers inside one scan transaction."""

    def due(self) -> list[SequenceState]: ...

    def missing(self, node: str, epoch: str, lo: int, hi: int) -> list[Range]:
        """Ranges within [lo, hi] with no stored event."""
        ...

    def declared(self, node: str, epoch: str) -> list[Range]: ...

    def tracked(self, node: str, epoch: str) -> list[TrackedHole]: ...

    def track(self, node: str, epoch: str, piece: Range, like: TrackedHole | None) -> None:
        """A new pending hole (noticed now), or a piece of `like` that stays as it was."""
        ...

    def drop(self, hole: TrackedHole, closed_by: str) -> None:
        """Delete a pending hole, close an open one."""
        ...

    def advance(self, state: SequenceState, *, contiguous_seq: int) -> None: ...

    def age(self, timeout_s: float) -> int:
        """Open the pending holes noticed at least `timeout_s` ago; returns how many."""
        ...

    def count_open(self) -> int: ...


def subtract(ranges: list[Range], cut: list[Range]) -> list[Range]:
    """`ranges` without any seq inside `cut` (both inclusive ranges)."""
    result = list(ranges)
    for c_first, c_last in sorted(cut):
        pieces: list[Range] = []
        for first, last in result:
            if c_last < first or c_first > last:
                pieces.append((first, last))
                continue
            if first < c_first:
                pieces.append((first, c_first - 1))
            if c_last < last:
                pieces.append((c_last + 1, last))
        result = pieces
    return result


def scan(tx: HoleTx, *, timeout_s: float) -> HoleReport:
    closed = 0
    for state in tx.due():
        node, epoch = state.node, state.epoch
        declared = tx.declared(node, epoch)
        firsts: list[int] = []  # of what is not contiguous
        for hole in tx.tracked(node, epoch):
            whole = (hole.first_seq, hole.last_seq)
            missing = tx.missing(node, epoch, *whole)
            remaining = subtract(missing, declared)
            if remaining != [whole]:
                tx.drop(hole, "declared" if missing == [whole] else "arrived")
                closed += hole.state == "open"
                for piece in remaining:
                    tx.track(node, epoch, piece, hole)
            firsts += [first for first, _ in remaining]
        if state.scanned_seq < state.max_seq:
            for gap in tx.missing(node, epoch, state.scanned_seq + 1, state.max_seq):
                for piece in subtract([gap], declared):
                    tx.track(node, epoch, piece, None)
                    firsts.append(piece[0])
        tx.advance(state, contiguous_seq=min(firsts) - 1 if firsts else state.max_seq)
    opened = tx.age(timeout_s)
    return HoleReport(open=tx.count_open(), opened=opened, closed=closed)
