"""Budgets for what a flood may make us do: replies to junk and log lines about it."""

from __future__ import annotations

import logging
import time
from typing import Any


class Budget:
    """A token bucket for what a flood may cost us (replies to junk): `rate` per second,
    `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def wait_s(self) -> float:
        """Seconds until a token is there (0: now)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> bool:
        if self.wait_s() > 0:
            return False
        self.tokens -= 1
        return True


class QuietLog:
    """At most one WARNING per key per window; the next one says how many were held back."""

    def __init__(self, logger: logging.Logger, window_s: float = 60.0) -> None:
        self.logger = logger
        self.window_s = window_s
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return
        if len(self._next) > 1024:  # keys come from a small set; never grow without bound
            self._next.clear()
        self._next[key] = now + self.window_s
        held = self._held.pop(key, 0)
        if held:
            self.logger.warning(
                msg + " (and %d more like it in %.0f s)", *args, held, self.window_s
            )
        else:
            self.logger.warning(msg, *args)
