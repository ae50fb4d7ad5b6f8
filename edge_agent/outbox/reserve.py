"""Disk space for the outbox: the free-space guard and the ballast file.

On a full disk SQLite cannot even delete (the WAL must grow) or checkpoint (the main file
must grow for pages that are new since the last checkpoint). Two things keep the outbox
able to evict instead of stopping:

- the guard: once free space falls below what one checkpoint and one WAL's worth of pages
  may need, the database file stops growing, so checkpoints never need space and the WAL's
  existing room is reused; new rows then take the pages of evicted ones. This holds without
  any reserve, for a disk that fills at any pace slower than one commit;
- the reserve: a ballast file, released when the disk fills all at once (another program
  took the last bytes), which gives both their room back. It is created whenever there is
  room for it; until then the outbox says it runs without one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

RETRY_S = 1.0  # how often a missing reserve is looked at again


def free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


class DiskReserve:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._next_try = 0.0

    @property
    def missing(self) -> bool:
        """Configured and not (fully) there."""
        if self.size == 0:
            return False
        try:
            return self.path.stat().st_size < self.size
        except OSError:
            return True

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

    def maybe_restore(self, *, keep_free: int) -> bool:
        """Create the ballast when it is missing and it fits with `keep_free` bytes to spare;
        True when it was created now."""
        now = time.monotonic()
        if not self.missing or now < self._next_try:
            return False
        self._next_try = now + RETRY_S
        free = free_bytes(self.path.parent)
        if free is None or free < self.size + keep_free:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("outbox disk reserve not created: %s", exc)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        log.info("outbox: disk reserve of %d bytes in place", self.size)
        return True
