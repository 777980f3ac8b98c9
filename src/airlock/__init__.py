"""airlock: use machine-learning models you do not trust without being owned by them.

Public API (pinned by ``tests/test_public_api.py``)::

    airlock.scan(path, ...) -> Report       static, fail-closed scan of model files
    airlock.load(path, ...) -> dict         tensors of a checkpoint, loaded without running it
"""

from __future__ import annotations

import sys as _sys


def _run_as_module() -> bool:
    """Whether this interpreter was started as ``python -m airlock...`` (``sys.orig_argv``, read as
    CPython parses it: clustered short flags, ``-X``/``-W`` values, ``-c``/a script ends it)."""
    argv = list(getattr(_sys, "orig_argv", []))[1:]
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--check-hash-based-pycs":
            index += 1
            continue
        if not arg.startswith("-") or arg in {"-", "--"}:
            return False
        if arg.startswith("--"):
            continue
        for position in range(1, len(arg)):
            flag = arg[position]
            if flag in "cm":
                value = arg[position + 1 :] or (argv[index] if index < len(argv) else "")
                return flag == "m" and (value == "airlock" or value.startswith("airlock."))
            if flag in "XW":
                if position + 1 == len(arg):
                    index += 1  # the value is the next argument
                break
    return False


def _forget_the_current_directory() -> None:
    """``python -m airlock ...`` puts the current directory first on ``sys.path`` (without ``-P``):
    run from inside a model's folder, its ``struct.py`` or ``json.py`` would replace the standard
    module the moment airlock first imports it, in the trusted process (outside review 19). The
    entry is removed while ``airlock`` itself is imported, before any of its lazy imports."""
    if _sys.flags.safe_path or not _sys.path or not _run_as_module():
        return
    import os

    first = _sys.path[0]
    try:
        here = os.getcwd()
    except OSError:
        here = None
    if first == "" or (here is not None and os.path.realpath(first) == os.path.realpath(here)):
        del _sys.path[0]


_forget_the_current_directory()

__version__ = "0.1.0"

from airlock.errors import (  # noqa: E402 (the path is fixed first)
    AirlockError,
    FormatError,
    IntegrityError,
    LimitError,
    PolicyError,
    SandboxError,
    UsageError,
)

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (type checkers treat any name
#: TYPE_CHECKING as true): ``import airlock`` and ``airlock --version`` stay as cheap as the error
#: classes.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from airlock._scan.api import scan
    from airlock.limits import Limits
    from airlock.loading import load
    from airlock.policy import Policy
    from airlock.results import FileReport, Finding, Location, Report, Severity, Skipped, Verdict

#: Names imported on first use (PEP 562), so that ``import airlock`` and ``airlock --version``
#: cost no more than the error classes: the scanner, the policy and the tensor machinery load
#: when a program first touches them.
_LAZY: dict[str, str] = {
    "scan": "airlock._scan.api",
    "load": "airlock.loading",
    "Limits": "airlock.limits",
    "Policy": "airlock.policy",
    **{
        name: "airlock.results"
        for name in ("FileReport", "Finding", "Location", "Report", "Severity", "Skipped", "Verdict")
    },
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'airlock' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
