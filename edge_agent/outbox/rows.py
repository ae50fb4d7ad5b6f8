"""The values that pass between the outbox's parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class OutboxRow(NamedTuple):
    """One pending event: `payload` is the encoded envelope, ready to publish.

    A named tuple, not a dataclass: a claim builds hundreds per batch straight from the
    cursor's tuples, and a frozen dataclass's `__init__` cost more than the query."""

    seq: int
    priority: int
    ts: float
    kind: str
    stream: str
    payload: bytes


class NewEvent(NamedTuple):
    """An event to store. `tail` is its envelope after the seq (`TailEncoder`), built by
    the producer's thread; without it the writer encodes `data` itself.

    A named tuple for the same reason as OutboxRow: put_many builds one per event."""

    kind: str
    stream: str
    ts: float
    data: dict[str, Any]
    priority: int
    tail: bytes | None = None


@dataclass(frozen=True)
class Gap:
    """Rows of one priority class dropped for one reason in one transaction."""

    reason: str
    priority: int
    first_seq: int
    last_seq: int
    count: int
