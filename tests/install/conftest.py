"""Fixtures for the install tests: `scripts/install` run for real into staging trees, with
no network (a network namespace of its own) and the wheels from the local wheelhouse that
scripts/setup fills for the test command."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, REPO, require_binary
from tests.inference.conftest import media_dir, model_dir  # noqa: F401  (fixtures)

INSTALL = REPO / "scripts" / "install"
WHEELHOUSE = REPO / ".cache" / "wheels"
UNIT = "edge-agent.service"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Wheels for every runtime dependency, so that installs in tests need no network."""
    if os.geteuid() != 0:
        _unavailable("scripts/install sets owners and modes: run the install tests as root")
    require_binary("unshare", package="util-linux")
    require_binary("systemd-sysusers", package="systemd")
    if not list(WHEELHOUSE.glob("onnxruntime-*.whl")):
        _unavailable(f"{WHEELHOUSE} is empty: run scripts/setup --test (scripts/test does)")
    return WHEELHOUSE


def offline_env(wheelhouse: Path | None) -> dict[str, str]:
    """pip without any index: only the wheelhouse (or a bundle's own wheels when None)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "EDGE_AGENT_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    if wheelhouse is not None:
        env["PIP_FIND_LINKS"] = str(wheelhouse)
    return env


def run_install(
    *args: str, wheelhouse: Path | None, script: Path = INSTALL, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`scripts/install ARGS` in a network namespace of its own: any download fails."""
    result = subprocess.run(
        ["unshare", "--net", "--", str(script), *args],
        env=offline_env(wheelhouse),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, f"install {args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@dataclass(frozen=True)
class Staged:
    root: Path
    output: str

    @property
    def prefix(self) -> Path:
        return self.root / "opt" / "edge-agent"

    @property
    def python(self) -> Path:
        return self.prefix / ".venv" / "bin" / "python"

    def ids(self, name: str = "edge-agent") -> tuple[int, int]:
        uid = gid = -1
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                uid, gid = int(fields[2]), int(fields[3])
        assert uid >= 0, f"no user {name} in {self.root}/etc/passwd"
        return uid, gid


@pytest.fixture(scope="session")
def staged(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Staged]:
    """One install staged into a fresh tree, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("staged")
    result = run_install("--root", str(root), wheelhouse=wheelhouse)
    yield Staged(root, result.stdout + result.stderr)


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under `root` with its type, mode, owner, size, mtime (and content hash
    outside the venv): equal snapshots mean nothing was touched."""
    seen: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        entry: tuple[object, ...] = (
            stat.filemode(info.st_mode),
            info.st_uid,
            info.st_gid,
            info.st_size,
            info.st_mtime_ns,
        )
        if stat.S_ISREG(info.st_mode) and ".venv" not in path.parts:
            entry += (hashlib.sha256(path.read_bytes()).hexdigest(),)
        elif stat.S_ISLNK(info.st_mode):
            entry += (os.readlink(path),)
        seen[str(path.relative_to(root))] = entry
    return seen


def mode_owner(path: Path) -> tuple[str, int, int]:
    info = path.lstat()
    return oct(stat.S_IMODE(info.st_mode)), info.st_uid, info.st_gid
