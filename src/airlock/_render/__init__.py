"""Report renderers: one module per output format, registered in ``RENDERERS``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from airlock._render import json_report, sarif, text
from airlock.results import Report

__all__ = ["RENDERERS"]

RENDERERS: Final[dict[str, Callable[[Report], str]]] = {
    "text": text.render,
    "json": json_report.render,
    "sarif": sarif.render,
}
