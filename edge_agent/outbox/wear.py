"""What the outbox costs the flash: bytes its writer thread sends to the device.

The kernel counts, per thread, the bytes a thread dirties in the page cache for a device
(`/proc/self/task/<tid>/io`: `write_bytes`, less `cancelled_write_bytes` for pages
truncated before they were written). All of the outbox's writes (WAL, checkpoints, the seq
ledger, the reserve) happen on its writer thread, so that is the outbox's share alone.
Where the kernel has no such file (or on tmpfs, which has no device) the figures are None
or zero.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

HOUR_S = 3600.0


def thread_write_bytes(native_id: int) -> int | None:
    try:
        text = Path(f"/proc/self/task/{native_id}/io").read_text()
    except OSError:
        return None
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    try:
        return int(fields["write_bytes"]) - int(fields.get("cancelled_write_bytes", "0"))
    except (KeyError, ValueError):
        return None


class WearMeter:
    """Samples of the writer thread's bytes, and the rate over the last hour."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()
        self._first: int | None = None
        self._written_at_first = 0
        self._events = 0

    def sample(self, native_id: int | None, events_written: int) -> None:
        if native_id is None:
            return
        value = thread_write_bytes(native_id)
        if value is None:
            return
        now = time.monotonic()
        if self._first is None:
            self._first, self._written_at_first = value, events_written
        self._samples.append((now, value))
        self._events = events_written
        while len(self._samples) > 2 and now - self._samples[1][0] >= HOUR_S:
            self._samples.popleft()

    def facts(self) -> dict[str, Any]:
        if self._first is None or not self._samples:
            return {
                "disk_write_bytes": None,
                "disk_write_bytes_per_hour": None,
                "disk_write_bytes_per_event": None,
                "flash_wear_gb_per_day": None,
            }
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        per_hour = None if t1 - t0 < 1.0 else (b1 - b0) / (t1 - t0) * HOUR_S
        events = self._events - self._written_at_first
        return {
            "disk_write_bytes": b1 - self._first,
            "disk_write_bytes_per_hour": None if per_hour is None else round(per_hour),
            "disk_write_bytes_per_event": None
            if events <= 0
            else round((b1 - self._first) / events),
            "flash_wear_gb_per_day": None if per_hour is None else round(per_hour * 24 / 1e9, 3),
        }
