"""Report renderers: one module per output format, imported when its format is asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from airlock.results import Report

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["FORMATS", "render"]

#: Output format name -> the module whose ``render(report) -> str`` produces it.
FORMATS: Final[dict[str, str]] = {
    "text": "airlock._render.text",
    "json": "airlock._render.json_report",
    "sarif": "airlock._render.sarif",
    "cyclonedx": "airlock._render.cyclonedx",
    "html": "airlock._render.html",
}


def render(report: Report, fmt: str) -> str:
    renderer: Callable[[Report], str] = importlib.import_module(FORMATS[fmt]).render
    return renderer(report)
