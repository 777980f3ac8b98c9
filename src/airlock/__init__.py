"""airlock: use machine-learning models you do not trust without being owned by them.

Public API (pinned by ``tests/test_public_api.py``)::

    airlock.scan(path, ...) -> Report       static, fail-closed scan of model files
    airlock.load(path, ...) -> dict         tensors of a checkpoint, loaded without running it
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

from airlock._scan.api import scan
from airlock.errors import (
    AirlockError,
    FormatError,
    IntegrityError,
    LimitError,
    PolicyError,
    SandboxError,
    UsageError,
)
from airlock.limits import Limits
from airlock.policy import Policy
from airlock.results import FileReport, Finding, Location, Report, Severity, Skipped, Verdict

if TYPE_CHECKING:
    from airlock.loading import load


def __getattr__(name: str) -> object:
    # ``load`` pulls in the tensor machinery; import it on first use so ``import airlock`` (and
    # every ``airlock scan``) stays cheap.
    if name == "load":
        from airlock.loading import load

        return load
    raise AttributeError(f"module 'airlock' has no attribute {name!r}")


__all__ = [
    "AirlockError",
    "FileReport",
    "Finding",
    "FormatError",
    "IntegrityError",
    "LimitError",
    "Limits",
    "Location",
    "Policy",
    "PolicyError",
    "Report",
    "SandboxError",
    "Severity",
    "Skipped",
    "UsageError",
    "Verdict",
    "__version__",
    "load",
    "scan",
]
