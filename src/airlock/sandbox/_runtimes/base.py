"""The interface every runtime implements. Runtimes run INSIDE the sandbox, in a locked-down job.

A runtime is the framework's own loader (torch.load, torch.jit.load, onnxruntime, ...): the code
that may execute whatever the model file asks for. ``warm_up`` runs in the worker before any job
exists (imports only: no untrusted byte has been seen); ``load`` runs in a job after its lockdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO, Protocol

import numpy as np

__all__ = ["Loaded", "NamedArrays", "Runtime"]

NamedArrays = list[tuple[str, np.ndarray[Any, Any]]]


class Loaded(Protocol):
    @property
    def kind(self) -> str:
        """What was found: ``module``, ``checkpoint``, ``script``, ``onnx``."""
        ...

    def summary(self) -> str: ...

    def state_dict(self) -> NamedArrays:
        """Every tensor of the loaded object, flattened to dotted names."""
        ...

    def infer(self, inputs: dict[str, np.ndarray[Any, Any]]) -> NamedArrays:
        """Run the model once on ``inputs`` (see docs/sandbox.md for how inputs map to arguments)."""
        ...


class Runtime(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def files(self) -> int:
        """How many file descriptors ``load`` expects (model, then weights)."""
        ...

    def warm_up(self) -> None: ...

    def load(self, files: Sequence[BinaryIO], definition: str | None, threads: int) -> Loaded: ...
