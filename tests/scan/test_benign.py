"""Ordinary model files must scan CLEAN (exit 0): no false positives on what people really ship."""

from __future__ import annotations

from pathlib import Path

import pytest

import airlock
from airlock import Verdict
from airlock._render.text import render as render_text
from tests.fixtures.benign import BENIGN


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_ordinary_files_are_clean(name: str, tmp_path: Path) -> None:
    paths = BENIGN[name](tmp_path)
    assert paths
    for path in paths:
        report = airlock.scan(path)
        assert report.verdict is Verdict.CLEAN, render_text(report)
        assert report.exit_code == 0
        assert report.files, "nothing was analysed"
