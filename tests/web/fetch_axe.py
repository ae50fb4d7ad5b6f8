"""Fetch the pinned axe-core (the accessibility checker the browser test injects) from the
npm registry into .cache/, checked by sha256. Run by scripts/setup; the tests never download.

    python tests/web/fetch_axe.py        # prints the path of axe.min.js
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "axe-core"
VERSION = "4.14.1"
TARBALL = f"{PACKAGE}-{VERSION}.tgz"
TARBALL_SHA256 = "e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745"
CACHE = REPO / ".cache"
AXE_JS = CACHE / f"{PACKAGE}-{VERSION}" / "axe.min.js"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(cache: Path = CACHE) -> Path:
    target = cache / f"{PACKAGE}-{VERSION}" / "axe.min.js"
    tarball = cache / TARBALL
    if not tarball.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(cache)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"npm pack {PACKAGE}@{VERSION} failed:\n{result.stderr.strip()}")
    actual = sha256(tarball)
    if actual != TARBALL_SHA256:
        raise SystemExit(
            f"sha256 mismatch for {tarball}: expected {TARBALL_SHA256}, got {actual};"
            " delete the file to fetch it again"
        )
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            for member in ("package/axe.min.js", "package/LICENSE"):
                source = tar.extractfile(tar.getmember(member))
                if source is None:
                    raise SystemExit(f"{member} missing from {tarball}")
                (target.parent / Path(member).name).write_bytes(source.read())
    return target


if __name__ == "__main__":
    print(fetch())
    sys.exit(0)
