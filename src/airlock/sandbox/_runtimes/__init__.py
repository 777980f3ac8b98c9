"""Runtimes that run inside the sandbox, registered here in code (no plug-in discovery)."""

from __future__ import annotations

from typing import Final

from airlock.errors import UsageError
from airlock.sandbox._runtimes import (
    hdf5_attrs,
    lm_score,
    onnx_rt,
    text_gguf,
    torch_definition,
    torch_pickle,
    torchscript,
)
from airlock.sandbox._runtimes.base import Runtime

__all__ = ["RUNTIMES", "runtime_named"]

RUNTIMES: Final[tuple[Runtime, ...]] = (
    torch_pickle.RUNTIME,
    torchscript.RUNTIME,
    torch_definition.RUNTIME,
    onnx_rt.RUNTIME,
    hdf5_attrs.RUNTIME,
    text_gguf.RUNTIME,
    lm_score.RUNTIME,
)


def runtime_named(name: str) -> Runtime:
    for runtime in RUNTIMES:
        if runtime.name == name:
            return runtime
    raise UsageError(f"unknown runtime {name!r}; known: {', '.join(r.name for r in RUNTIMES)}")
