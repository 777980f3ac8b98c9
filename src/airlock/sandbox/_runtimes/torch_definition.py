"""A trusted model-definition file plus safetensors weights ("weights and code distributed apart").

The definition is Python source the *user* supplies (not part of the model download); it must define
``build_model() -> torch.nn.Module``. It still runs only inside the job, so a definition that
turns out to be hostile meets the same walls as a hostile pickle. Weights load strictly: missing or
unexpected tensors are errors.
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
class _Defined:
    module: Any
    kind: str = "module"

    def summary(self) -> str:
        return f"definition-file {type(self.module).__qualname__}"

    def state_dict(self) -> NamedArrays:
        return flatten_tensors(self.module)

    def infer(self, inputs: dict[str, np.ndarray[Any, Any]]) -> NamedArrays:
        return call_module(self.module, inputs)


class _TorchDefinition:
    name = "definition"
    files = 1

    def warm_up(self) -> None:
        importlib.import_module("safetensors.torch")
        importlib.import_module("torch")

    def load(self, files: Sequence[BinaryIO], definition: str | None, threads: int) -> Loaded:
        import safetensors.torch
        import torch

        if definition is None:
            raise SandboxError("definition runtime: no model-definition source was sent")
        torch.set_num_threads(threads)
        namespace: dict[str, Any] = {"__name__": "airlock_model_definition"}
        # Trusted, user-supplied source, executed inside the sandbox only.
        exec(compile(definition, "<model definition>", "exec"), namespace)  # noqa: S102
        build = namespace.get("build_model")
        if not callable(build):
            raise SandboxError("definition runtime: the definition file must define build_model()")
        module = build()
        if not isinstance(module, torch.nn.Module):
            raise SandboxError(
                f"definition runtime: build_model() returned {type(module).__name__}, not nn.Module"
            )
        weights = safetensors.torch.load(files[0].read())
        module.load_state_dict(weights, strict=True)
        module.eval()
        return _Defined(module)


RUNTIME = _TorchDefinition()
