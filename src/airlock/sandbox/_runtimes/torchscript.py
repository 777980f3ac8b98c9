"""A TorchScript archive loaded with ``torch.jit.load`` (inside a job only)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from airlock.sandbox._runtimes._torch_util import call_module, flatten_tensors
from airlock.sandbox._runtimes.base import Loaded, NamedArrays

__all__ = ["RUNTIME"]


@dataclass(frozen=True)
class _Script:
    module: Any
    kind: str = "script"

    def summary(self) -> str:
        return f"TorchScript {getattr(self.module, 'original_name', type(self.module).__name__)}"

    def state_dict(self) -> NamedArrays:
        return flatten_tensors(self.module)

    def infer(self, inputs: dict[str, np.ndarray[Any, Any]]) -> NamedArrays:
        self.module.eval()
        return call_module(self.module, inputs)


class _TorchScript:
    name = "torchscript"
    files = 1

    def warm_up(self) -> None:
        importlib.import_module("torch")

    def load(self, files: Sequence[BinaryIO], definition: str | None, threads: int) -> Loaded:
        import torch

        torch.set_num_threads(threads)
        return _Script(torch.jit.load(files[0], map_location="cpu"))  # type: ignore[no-untyped-call]


RUNTIME = _TorchScript()
