"""Fixtures for the integrity tests: a small model folder generated in code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integrity.integrity_helpers import build_model


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A small model folder (5 files, two sub-folders)."""
    return build_model(tmp_path / "model")
