"""The peer's own virtual environment under .cache/bench-peer/, installed once and reused.

Everything is pinned by version and sha256 in bench/peer/requirements.txt and installed
with `--require-hashes --no-deps`: the package registry is the only network it needs. What
got installed (`pip freeze`) is recorded in .cache/bench-peer/installed.txt beside the
digest of the requirements it came from; a changed requirements file means a fresh venv.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEER_DIR = REPO / ".cache" / "bench-peer"
VENV = PEER_DIR / "venv"
MARKER = PEER_DIR / "installed.txt"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class Peer:
    python: Path
    gateway: Path  # the `thingsboard-gateway` console script
    shipped_config: Path  # the package's own config directory
    freeze: list[str]

    def version(self, package: str) -> str:
        prefix = f"{package.lower()}=="
        return next(
            (line.split("==", 1)[1] for line in self.freeze if line.lower().startswith(prefix)),
            "?",
        )


def _digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def _run(command: list[str], *, timeout_s: float) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit {done.returncode}")
    return done.stdout


def _located(freeze: list[str]) -> Peer:
    python = VENV / "bin" / "python"
    package_dir = _run(
        [
            str(python),
            "-c",
            "import thingsboard_gateway as g, os; print(os.path.dirname(g.__file__))",
        ],
        timeout_s=60,
    ).strip()
    return Peer(python, VENV / "bin" / "thingsboard-gateway", Path(package_dir) / "config", freeze)


def ensure_peer() -> Peer | str:
    """The installed peer, installing it first if needed; or why it cannot be had."""
    digest = _digest()
    if MARKER.exists() and (VENV / "bin" / "python").exists():
        recorded = MARKER.read_text().splitlines()
        if recorded and recorded[0] == f"# requirements sha256 {digest}":
            try:
                return _located(recorded[1:])
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                pass  # a venv that no longer runs (its Python moved): build it again
    try:
        print(f"installing the peer into {VENV.relative_to(REPO)} (once) ...", flush=True)
        shutil.rmtree(VENV, ignore_errors=True)
        MARKER.unlink(missing_ok=True)
        PEER_DIR.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", str(VENV)], timeout_s=300)
        pip = [str(VENV / "bin" / "python"), "-m", "pip"]
        _run(
            [
                *pip,
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--require-hashes",
                "--no-deps",
                "-r",
                str(REQUIREMENTS),
            ],
            timeout_s=INSTALL_TIMEOUT_S,
        )
        freeze = _run([*pip, "freeze", "--disable-pip-version-check"], timeout_s=120).split()
        MARKER.write_text("\n".join([f"# requirements sha256 {digest}", *freeze]) + "\n")
        return _located(freeze)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"cannot install thingsboard-gateway into {VENV}: {exc}"
