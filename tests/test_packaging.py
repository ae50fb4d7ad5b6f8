"""Every file the package reads at run time ships in the wheel: a data file that no
package-data pattern names is missing on an installed node (the status page's catalogues
once were)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_data_file_of_the_package_is_named_by_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["edge_agent"]
    package = REPO / "edge_agent"
    data = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert data, "the package has data files (schemas, the page)"
    # setuptools matches each pattern against paths relative to the package, '*' not
    # crossing '/'.
    unnamed = [
        name
        for name in data
        if not any(
            fnmatch.fnmatch(name, pattern) and name.count("/") == pattern.count("/")
            for pattern in patterns
        )
    ]
    assert unnamed == [], f"add to [tool.setuptools.package-data]: {unnamed}"
