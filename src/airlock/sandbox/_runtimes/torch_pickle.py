"""A pickled torch object (nn.Module or checkpoint) loaded with ``torch.load(weights_only=False)``.

This is exactly the call that runs code from the file; it only ever happens inside a job.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from airlock.errors import SandboxError
from airlock.sandbox._runtimes._torch_util import call_module, flatten_tensors
from airlock.sandbox._runtimes.base import Loaded, NamedArrays

__all__ = ["RUNTIME"]


@dataclass(frozen=True)
class _Pickled:
    obj: object

    @property
    def kind(self) -> str:
        import torch

        return "module" if isinstance(self.obj, torch.nn.Module) else "checkpoint"

    def summary(self) -> str:
        return f"{type(self.obj).__module__}.{type(self.obj).__qualname__}"

    def state_dict(self) -> NamedArrays:
        return flatten_tensors(self.obj)

    def infer(self, inputs: dict[str, np.ndarray[Any, Any]]) -> NamedArrays:
        if not callable(self.obj) or self.kind != "module":
            raise SandboxError(f"infer: the file holds a {self.summary()}, not a callable nn.Module")
        module: Any = self.obj
        module.eval()
        return call_module(module, inputs)


class _TorchPickle:
    name = "torch"
    files = 1

    def warm_up(self) -> None:
        importlib.import_module("torch")

    def load(self, files: Sequence[BinaryIO], definition: str | None, threads: int) -> Loaded:
        import torch

        torch.set_num_threads(threads)
        obj = torch.load(files[0], map_location="cpu", weights_only=False)  # inside the sandbox only
        return _Pickled(obj)


RUNTIME = _TorchPickle()
