"""The page's problem history and the technician's log tail.

`ProblemLog` turns the verdict's reasons into a history: each reason that appears is one
problem with its start time (and end time once it clears), by code and params, so the page
can say it in the reader's language. A `starting` reason is only a problem once it has
lasted `starting_grace_s`. It is sampled once a second (by the status server) and on every
status read, so a problem shorter than a second may not appear.

`LogTail` is a logging handler keeping the last warnings and errors as text, in English:
only shown after login.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from edge_agent.health import Finding, State

PROBLEMS_KEPT = 20
STARTING = "starting"


class ProblemLog:
    def __init__(self, *, size: int = PROBLEMS_KEPT, starting_grace_s: float = 30.0) -> None:
        self.starting_grace_s = starting_grace_s
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._open: dict[tuple[str, str], dict[str, Any]] = {}
        self._seen_starting: dict[tuple[str, str], float] = {}

    def observe(self, findings: Iterable[Finding], now: float | None = None) -> None:
        now = time.time() if now is None else now
        current: dict[tuple[str, str], Finding] = {}
        for finding in findings:
            current[(finding.component, finding.reason.code)] = finding
        for key in [k for k in self._seen_starting if k not in current]:
            del self._seen_starting[key]
        for key, finding in current.items():
            entry = self._open.get(key)
            if entry is not None:
                if finding.severity is State.FAILING:
                    entry["severity"] = State.FAILING.value
                entry["params"] = dict(finding.reason.params)
                continue
            if finding.reason.code == STARTING:
                first = self._seen_starting.setdefault(key, now)
                if now - first < self.starting_grace_s:
                    continue
            else:
                first = now
            entry = {
                "time": first,
                "end": None,
                "component": finding.component,
                "kind": finding.kind,
                "severity": finding.severity.value,
                "code": finding.reason.code,
                "params": dict(finding.reason.params),
            }
            self._entries.append(entry)
            self._open[key] = entry
        for key in [k for k in self._open if k not in current]:
            self._open.pop(key)["end"] = now

    def entries(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [dict(entry) for entry in reversed(self._entries)]


class LogTail(logging.Handler):
    """The last `size` records at WARNING and above, kept as plain text."""

    def __init__(self, size: int = 50) -> None:
        super().__init__(logging.WARNING)
        self._records: deque[dict[str, Any]] = deque(maxlen=size)
        self._records_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            message = str(record.msg)
        entry = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message[:500],
        }
        with self._records_lock:
            self._records.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        with self._records_lock:
            return list(reversed(self._records))
