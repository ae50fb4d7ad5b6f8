"""Shared base for every configuration model: strict, frozen, documented."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A configuration section: unknown keys are errors, values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
