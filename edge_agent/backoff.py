"""One capped, jittered exponential backoff for every retry loop (sensors, capture, sync,
the outbox writer, the receiver)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays `base * 2**n`, capped at `cap`, each drawn from `[(1 - jitter) d, d]`.

    Jitter keeps a province of nodes that lost the same broker from coming back in step;
    the cap keeps a node that has been down for a day retrying often enough. `reset()`
    after a success starts again from `base`."""

    def __init__(
        self,
        base: float,
        cap: float,
        *,
        jitter: float = 0.5,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap (base={base}, cap={cap})")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be within 0..1, not {jitter}")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self._rand = rand
        self.attempts = 0

    def peek(self) -> float:
        """The ceiling of the next delay, without drawing it."""
        return float(min(self.cap, self.base * 2 ** min(self.attempts, 60)))

    def next(self) -> float:
        ceiling = self.peek()
        self.attempts += 1
        return ceiling * (1 - self.jitter * self._rand())

    def reset(self) -> None:
        self.attempts = 0
