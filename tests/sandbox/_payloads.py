"""Malicious-but-harmless model files, generated at test time.

Each payload is a real pickle/torch file whose ``__reduce__`` hands ``exec`` or ``eval`` a short
probe (stdlib only, because the probe runs inside the sandbox where the tests are not importable).
A probe that *succeeds* returns evidence through the model's own tensors; a probe that is blocked
raises, which makes the framework's loader fail.
"""

from __future__ import annotations

import builtins
from pathlib import Path

import torch


class _Exec:
    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (builtins.exec, (self.source,))


class _Eval:
    def __init__(self, expression: str) -> None:
        self.expression = expression

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (builtins.eval, (self.expression,))


def exec_checkpoint(path: Path, source: str) -> Path:
    """A torch checkpoint whose loading runs ``source`` (statements)."""
    torch.save({"weight": torch.ones(2), "payload": _Exec(source)}, path)
    return path


def eval_checkpoint(path: Path, expression: str) -> Path:
    """A torch checkpoint whose ``evidence`` entry is whatever ``expression`` evaluates to."""
    torch.save({"weight": torch.ones(2), "evidence": _Eval(expression)}, path)
    return path


def bytes_tensor(expression: str) -> str:
    """An expression that turns the bytes of ``expression`` into a uint8 tensor (evidence)."""
    return f"__import__('torch').tensor(list({expression}), dtype=__import__('torch').uint8)"


def exec_then_eval_checkpoint(path: Path, source: str, expression: str) -> Path:
    """Runs ``source`` first (it may define helpers in ``builtins``), then records ``expression``."""
    torch.save({"setup": _Exec(source), "evidence": _Eval(expression)}, path)
    return path
