"""The interface every runtime implements. Runtimes run INSIDE the sandbox, in a locked-down job.

A runtime is the framework's own loader (torch.load, torch.jit.load, onnxruntime, ...): the code
that may execute whatever the model file asks for. ``warm_up`` runs in the worker before any job
exists (imports only: no untrusted byte has been seen); ``load`` runs in a job after its lockdown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, runtime_checkable

import numpy as np

__all__ = ["Generated", "Generates", "Loaded", "NamedArrays", "Runtime"]

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


@dataclass(frozen=True)
class Generated:
    """How a generation ended: ``stop`` (end of text or a stop string), ``length`` (max_tokens),
    ``cancelled`` (the host asked), ``context`` (the prompt and max_tokens do not fit the model's
    context: nothing was generated); the token counts the model saw and produced."""

    finish: str
    prompt_tokens: int
    completion_tokens: int


@runtime_checkable
class Generates(Protocol):
    """A loaded text model: streams text for one request (see ``text_gguf.check_request``)."""

    def generate(
        self, request: dict[str, Any], emit: Callable[[str], None], cancelled: Callable[[], bool]
    ) -> Generated:
        """Call ``emit`` once per generated token with its new text; stop when ``cancelled()``."""
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


def hf_offline(modules: Sequence[str]) -> None:
    """Import ``modules`` (a runtime's warm-up) with the Hugging Face libraries offline and quiet:
    nothing is downloaded and no progress bar is drawn, whatever the model says."""
    import importlib
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    for module in modules:
        importlib.import_module(module)
    hf_logging: Any = importlib.import_module("transformers.utils.logging")
    hf_logging.disable_progress_bar()
