"""Fixtures for the integrity tests: a small model folder generated in code."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.integrity import sign
from tests.integrity.integrity_helpers import build_model, write_key_pair


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A small model folder (5 files, two sub-folders)."""
    return build_model(tmp_path / "model")


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A model folder signed with a fresh key pair: (model, signature, public key)."""
    model = build_model(tmp_path / "model")
    private, public = write_key_pair(tmp_path, "signer")
    sig = tmp_path / "model.sig"
    sign(model, key=private, output=sig)
    return model, sig, public
