"""Event snapshots stay within their count and byte bounds."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.inference.snapshots import SnapshotStore


@pytest.fixture(scope="module")
def frame(media_dir: Path) -> np.ndarray:
    image = cv2.imread(str(media_dir / "messi5.jpg"))
    assert image is not None
    return image


def test_oldest_snapshots_go_past_the_count(tmp_path: Path, frame: np.ndarray) -> None:
    store = SnapshotStore(tmp_path / "cam", max_count=3, max_bytes=10**9)
    for index in range(6):
        path = store.save(frame, f"{index:03d}")
        assert path is not None
        os.utime(path, (1000 + index, 1000 + index))
    assert [p.name for p in store.files()] == ["003.jpg", "004.jpg", "005.jpg"]
    decoded = cv2.imread(str(store.files()[-1]))
    assert decoded.shape == frame.shape


def test_byte_bound(tmp_path: Path, frame: np.ndarray) -> None:
    one = SnapshotStore(tmp_path / "probe", max_count=10, max_bytes=10**9).save(frame, "x")
    assert one is not None
    size = one.stat().st_size
    store = SnapshotStore(tmp_path / "cam", max_count=100, max_bytes=int(size * 2.5))
    for index in range(5):
        store.save(frame, f"{index:03d}")
    assert len(store.files()) == 2
    assert sum(p.stat().st_size for p in store.files()) <= size * 2.5


def test_zero_keeps_none(tmp_path: Path, frame: np.ndarray) -> None:
    assert SnapshotStore(tmp_path / "cam", max_count=0, max_bytes=100).save(frame, "x") is None
    assert not (tmp_path / "cam").exists()
