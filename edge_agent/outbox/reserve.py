"""A ballast file beside the outbox: space that can be given back when the disk is full.

On a full disk SQLite cannot even delete (the WAL must grow) or checkpoint (the main file must
grow), so the outbox could neither evict nor recover on its own. Releasing the reserve lets
both run; it is rebuilt once the disk has room for it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

RETRY_S = 10.0


class DiskReserve:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._next_try = 0.0

    def release(self) -> bool:
        """Delete the ballast; True when there was one to free."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot release outbox disk reserve %s: %s", self.path, exc)
            return False
        self._next_try = time.monotonic() + RETRY_S
        return True

    def maybe_restore(self) -> None:
        """Rebuild the ballast when it is missing and the disk has twice its size free."""
        now = time.monotonic()
        if self.size == 0 or now < self._next_try:
            return
        self._next_try = now + RETRY_S
        with contextlib.suppress(OSError):
            if self.path.stat().st_size >= self.size:
                return
        try:
            if shutil.disk_usage(self.path.parent).free < 2 * self.size:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("outbox disk reserve not rebuilt: %s", exc)
            with contextlib.suppress(OSError):
                self.path.unlink()
