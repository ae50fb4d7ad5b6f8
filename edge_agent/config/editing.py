"""Changing the configuration file remotely: validate with the same models, write atomically,
keep a backup to roll back to."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import tomli_w

from edge_agent.config.loader import load_settings, read_toml
from edge_agent.config.settings import Settings
from edge_agent.errors import ConfigError


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def _apply(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ValueError(f"{dotted!r} is not a dotted key")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"{dotted}: {key} is not a table")
        node = child
    if value is None:
        node.pop(keys[-1], None)  # null removes the key: back to its default
    else:
        node[keys[-1]] = value


def edit_config(path: Path, changes: dict[str, Any]) -> Settings:
    """Apply `{dotted.key: value}` to the TOML file at `path` and return the new settings.

    Nothing is written unless the result validates; the old file is kept as `*.bak`.
    Comments of the original file survive only in the backup. Raises ValueError."""
    data = read_toml(path)
    for dotted, value in changes.items():
        _apply(data, dotted, value)
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot write these values as TOML: {exc}") from None
    candidate = path.with_name(path.name + ".new")
    candidate.write_text(text, encoding="utf-8")
    try:
        settings = load_settings(candidate)
    except ConfigError as exc:
        candidate.unlink(missing_ok=True)
        problems = [p.replace(str(candidate), str(path)) for p in exc.problems]
        raise ValueError("; ".join(problems)) from None
    shutil.copy2(path, backup_path(path))
    with open(candidate, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(candidate, path)
    return settings


def restore_backup(path: Path) -> None:
    """Put the file back as it was before the last `edit_config`."""
    os.replace(backup_path(path), path)
