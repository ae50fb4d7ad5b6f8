"""The example configuration documents every key the Settings model accepts."""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel

from edge_agent.config import Settings
from tests.conftest import REPO

EXAMPLE = REPO / "config" / "edge-agent.example.toml"


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append((f"{prefix}{name}", name))
        for sub in _models_in(field.annotation):
            keys += _keys(sub, f"{prefix}{name}.")
    return keys


def test_every_key_is_in_the_example() -> None:
    text = EXAMPLE.read_text()
    missing = []
    for dotted, name in _keys(Settings):
        section = re.search(rf"^#?\s*\[\[?{re.escape(dotted)}\]?\]", text, re.M)
        # `key = ...` on its own line or inside an inline table, commented or not.
        assignment = re.search(rf"(?<![\w.]){re.escape(name)}\s*=", text)
        if not (section or assignment):
            missing.append(dotted)
    assert not missing, f"keys not documented in {EXAMPLE.name}: {', '.join(sorted(set(missing)))}"


def test_every_field_has_a_description() -> None:
    undocumented = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if not field.description:
                undocumented.append(f"{prefix}{name}")
            for sub in _models_in(field.annotation):
                walk(sub, f"{prefix}{name}.")

    walk(Settings, "")
    assert not undocumented, f"fields without a description: {', '.join(undocumented)}"
