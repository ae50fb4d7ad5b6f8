"""The values that pass between the outbox's parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from edge_agent.outbox.encode import encode_data


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


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to store; `body` is `data` already encoded (by the producer's thread)."""

    kind: str
    stream: str
    ts: float
    data: dict[str, Any]
    priority: int
    body: bytes | None = None

    @classmethod
    def encoded(
        cls, kind: str, stream: str, ts: float, data: dict[str, Any], priority: int
    ) -> NewEvent:
        """Encode `data` now; raises ContractError (NaN, not JSON) before anything queues."""
        return cls(kind, stream, ts, data, priority, encode_data(data))


@dataclass(frozen=True)
class Gap:
    """Rows of one priority class dropped for one reason in one transaction."""

    reason: str
    priority: int
    first_seq: int
    last_seq: int
    count: int
