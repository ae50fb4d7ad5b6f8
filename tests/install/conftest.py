"""Fixtures for the install tests."""

from __future__ import annotations

from tests.inference.conftest import media_dir, model_dir  # noqa: F401  (fixtures)
