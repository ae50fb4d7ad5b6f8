"""Station files on the node's disk: written there first, uploaded from there.

`state_dir/station_export/pending/<Station>/yyyy/MM/dd/<name>.txt` waits for upload; once the
server has it whole, it moves to the same place under `sent/`, kept `keep_sent_days`. A file
appears under its final name only complete (temporary name, fsync, rename), so a crash
never leaves half a file to upload. Blocking: the component calls it from threads.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

TMP_SUFFIX = ".tmp"


@dataclass(frozen=True, order=True)
class Spooled:
    """One file waiting for upload; orders oldest period first (then by station)."""

    stamp: str
    name: str
    rel_dir: str

    @classmethod
    def of(cls, rel_dir: str, name: str) -> Spooled:
        return cls(name.removesuffix(".txt").rsplit("_", 1)[-1], name, rel_dir)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pending_dir = root / "pending"
        self.sent_dir = root / "sent"

    def open(self) -> None:
        """Create the folders; remove temporary files a crash left behind."""
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        self.sent_dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.pending_dir.rglob(f"*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)

    def write(self, rel_dir: str, name: str, content: bytes) -> bool:
        """Store one file for upload; False when this period's file exists already (a
        clock set back must not overwrite what was sent)."""
        if (self.pending_dir / rel_dir / name).exists() or (
            self.sent_dir / rel_dir / name
        ).exists():
            return False
        folder = self.pending_dir / rel_dir
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}{TMP_SUFFIX}"
        with tmp.open("wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / name)
        _fsync_dir(folder)
        return True

    def pending(self) -> list[Spooled]:
        found = [
            Spooled.of(path.parent.relative_to(self.pending_dir).as_posix(), path.name)
            for path in self.pending_dir.rglob("*.txt")
            if not path.name.startswith(".")
        ]
        return sorted(found)

    def read(self, item: Spooled) -> bytes:
        return (self.pending_dir / item.rel_dir / item.name).read_bytes()

    def mark_sent(self, item: Spooled) -> None:
        target = self.sent_dir / item.rel_dir
        target.mkdir(parents=True, exist_ok=True)
        os.replace(self.pending_dir / item.rel_dir / item.name, target / item.name)

    def drop_oldest(self, keep: int) -> list[Spooled]:
        """Delete the oldest pending files beyond `keep`; returns what went."""
        pending = self.pending()
        excess = pending[: max(0, len(pending) - keep)]
        for item in excess:
            (self.pending_dir / item.rel_dir / item.name).unlink(missing_ok=True)
        return excess

    def prune_sent(self, older_than_s: float, *, now: float | None = None) -> int:
        """Delete uploaded files older than `older_than_s` (by modification time)."""
        cutoff = (time.time() if now is None else now) - older_than_s
        removed = 0
        for path in self.sent_dir.rglob("*.txt"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed
