"""The values that pass between the outbox's parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class OutboxRow(NamedTuple):
    """One pending event: `payload` is its encoded envelope, ready to publish.

    A named tuple, not a dataclass: a claim builds hundreds per batch."""

    seq: int
    priority: int
    ts: float
    kind: str
    stream: str
    payload: bytes


class NewEvent(NamedTuple):
    """An event to store: `tail` is its envelope after the seq (`TailEncoder`)."""

    kind: str
    stream: str
    ts: float
    priority: int
    tail: bytes


@dataclass(frozen=True)
class StoredRow:
    """A row as stored: it carries the events `seq` .. `last_seq`."""

    seq: int
    last_seq: int
    priority: int
    size: int
    created: float

    @property
    def count(self) -> int:
        return self.last_seq - self.seq + 1


@dataclass(frozen=True)
class Gap:
    """Rows of one priority class dropped for one reason in one transaction."""

    reason: str
    priority: int
    first_seq: int
    last_seq: int
    count: int
