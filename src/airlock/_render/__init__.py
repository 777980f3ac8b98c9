"""Report renderers: one module per output format, imported when its format is asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from airlock.results import Report

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["FORMATS", "printable", "render", "shown_name"]

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


def printable(text: str) -> str:
    """A string that may quote a scanned file (a message, a callable, evidence) made safe for a
    terminal or a page: control, format (bidi), line-break and private characters and the lone
    surrogates that stand for bytes of a name that is not UTF-8 are written as Python escapes
    (``\\x1b``, ``\\u202e``, ``\\n``, ``\\udcff``), so it cannot clear the screen, recolour or
    reorder a line, print a fake line of its own, or make the report text that is not Unicode."""
    return text if text.isprintable() else repr(text)[1:-1]


def shown_name(text: str) -> str:
    """A path or member name as a person's report shows it: :func:`printable`, and escaped too
    whenever it holds a backslash, so the shown text always reads back (Python's string escapes)
    to exactly one name: the file ``a<newline>b`` is ``a\\nb`` and the file named with the four
    characters ``a\\nb`` is ``a\\\\nb``; before, both were ``a\\nb`` (outside review 27)."""
    return text if text.isprintable() and "\\" not in text else repr(text)[1:-1]
