"""Event snapshots: JPEGs kept per camera on local disk under a count and byte bound.

They stay on the node; the IOC gets one only when it asks (the `snapshot` command).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np

from edge_agent.errors import CameraError

log = logging.getLogger(__name__)


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CameraError("JPEG encoding failed")
    return bytes(buffer.tobytes())


class SnapshotStore:
    """`state_dir/snapshots/{camera}/`: newest kept, oldest deleted past either bound."""

    def __init__(self, directory: Path, *, max_count: int, max_bytes: int) -> None:
        self.directory = directory
        self.max_count = max_count
        self.max_bytes = max_bytes
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
        while files and (len(files) > self.max_count or total > self.max_bytes):
            oldest = files.pop(0)
            total -= sizes.pop(0)
            oldest.unlink(missing_ok=True)

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.jpg"), key=lambda p: (p.stat().st_mtime, p.name))
