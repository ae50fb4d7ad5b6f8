"""Changing the configuration file remotely: validate with the same models, write atomically,
keep a backup to roll back to, and keep the technician's comments and layout (the file is
edited as a TOML document with tomlkit, not parsed and rewritten)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from edge_agent.config.loader import load_settings, read_toml
from edge_agent.config.settings import Settings
from edge_agent.errors import ConfigError


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def _apply(doc: Any, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError([f"{dotted}: not a dotted key"])
    node = doc
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            if value is None:
                return  # removing a key under a table that is not there: nothing to do
            child = tomlkit.table()
            node[key] = child
        if not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise ConfigError([f"{dotted}: {where} is not a table"])
        node = child
    if value is None:
        node.pop(keys[-1], None)  # null removes the key: back to its default
    else:
        node[keys[-1]] = value


def edit_config(path: Path, changes: dict[str, Any]) -> Settings:
    """Apply `{dotted.key: value}` to the TOML file at `path` and return the new settings.

    Nothing is written unless the result validates; the old file is kept as `*.bak`, and
    comments and layout of the file are kept. Raises `ConfigError` naming the key (also for
    a file that cannot be read or parsed)."""
    read_toml(path)  # a missing, unreadable or broken file is said as the loader says it
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
        for dotted, value in changes.items():
            _apply(doc, dotted, value)
        text = tomlkit.dumps(doc)
    except (TOMLKitError, TypeError, ValueError, OSError) as exc:
        raise ConfigError([f"config: cannot write these values as TOML: {exc} ({path})"]) from None
    candidate = path.with_name(path.name + ".new")
    try:
        candidate.write_text(text, encoding="utf-8")
        settings = load_settings(candidate)
    except ConfigError as exc:
        candidate.unlink(missing_ok=True)
        raise ConfigError([p.replace(str(candidate), str(path)) for p in exc.problems]) from None
    except OSError as exc:
        candidate.unlink(missing_ok=True)
        raise ConfigError([f"config: cannot write {candidate}: {exc.strerror}"]) from None
    shutil.copy2(path, backup_path(path))
    with open(candidate, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(candidate, path)
    return settings


def restore_backup(path: Path) -> None:
    """Put the file back as it was before the last `edit_config`."""
    os.replace(backup_path(path), path)
