"""Event snapshots: JPEGs kept per camera on local disk under a count and byte bound.

They stay on the node; the IOC gets one only when it asks (the `snapshot` command).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edge_agent.errors import CameraError

log = logging.getLogger(__name__)
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.jpg$")


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CameraError("JPEG encoding failed")
    return bytes(buffer.tobytes())


class SnapshotStore:
    """`state_dir/snapshots/{camera}/`: newest kept, oldest deleted past either bound, and
    past `max_age_s` when set (plate snapshots: personal data kept no longer than needed)."""

    def __init__(
        self, directory: Path, *, max_count: int, max_bytes: int, max_age_s: float | None = None
    ) -> None:
        self.directory = directory
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._lock = threading.Lock()

    def save(self, image: np.ndarray, name: str) -> Path | None:
        """Write `name`.jpg and prune; returns its path, or None when snapshots are off or
        the disk refused (logged: a full disk must not stop detection)."""
        if self.max_count == 0 or self.max_bytes == 0:
            return None
        data = encode_jpeg(image)
        path = self.directory / f"{name}.jpg"
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
                self._prune()
            except OSError as exc:
                log.warning("snapshot %s not kept: %s", path, exc)
                return None
        return path

    def _prune(self) -> None:
        files = sorted(self.directory.glob("*.jpg"), key=lambda p: (p.stat().st_mtime, p.name))
        sizes = [p.stat().st_size for p in files]
        total = sum(sizes)
        expired = -1.0 if self.max_age_s is None else time.time() - self.max_age_s
        while files and (
            len(files) > self.max_count
            or total > self.max_bytes
            or files[0].stat().st_mtime < expired
        ):
            oldest = files.pop(0)
            total -= sizes.pop(0)
            oldest.unlink(missing_ok=True)

    def prune(self) -> None:
        """Apply the bounds now (the age bound also holds while nothing new is saved)."""
        with self._lock:
            if self.directory.is_dir():
                self._prune()

    def read(self, name: str) -> bytes | None:
        """The kept snapshot `name` (as an event's `snapshot` field gives it), or None."""
        if not _FILE_NAME.match(name):
            return None
        self.prune()
        try:
            return (self.directory / name).read_bytes()
        except OSError:
            return None

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.jpg"), key=lambda p: (p.stat().st_mtime, p.name))
