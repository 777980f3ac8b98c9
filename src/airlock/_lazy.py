"""PEP 562 lazy exports for packages whose parts need optional extras.

``airlock.sandbox`` and ``airlock.gateway`` export names from modules that import numpy,
starlette and the like. Importing one light submodule (``airlock.gateway._tls`` for
``airlock certs dev``, ``airlock.sandbox._policy`` for the gateway config) must not pull in
those extras, so the package ``__init__`` names where each export lives and imports it on first
access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a submodule) on first use."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals_ = importlib.import_module(package).__dict__
        globals_[name] = value  # later lookups skip __getattr__
        return value

    return __getattr__
