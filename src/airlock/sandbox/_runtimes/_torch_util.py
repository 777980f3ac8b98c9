"""Torch helpers shared by the torch runtimes (inside the sandbox)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from airlock.sandbox._runtimes.base import NamedArrays

__all__ = ["call_module", "flatten_tensors", "to_numpy"]

_MAX_DEPTH = 32


def to_numpy(tensor: Any) -> np.ndarray[Any, Any]:
    import torch

    value = tensor.detach().cpu().contiguous()
    if value.dtype == torch.bfloat16:
        import ml_dtypes

        return np.asarray(value.view(torch.int16).numpy().view(ml_dtypes.bfloat16))
    return np.asarray(value.numpy())


def flatten_tensors(value: object, prefix: str = "", depth: int = 0) -> NamedArrays:
    """Every tensor inside nested dicts/lists/tuples/modules, named by its path (``a.b.0``)."""
    import torch

    if depth > _MAX_DEPTH:
        return []
    if isinstance(value, torch.Tensor):
        return [(prefix or "tensor", to_numpy(value))]
    if isinstance(value, torch.nn.Module):
        return [(f"{prefix}.{k}" if prefix else k, to_numpy(v)) for k, v in value.state_dict().items()]
    items: list[tuple[str, object]] = []
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(str(i), v) for i, v in enumerate(value)]
    found: NamedArrays = []
    for key, item in items:
        found.extend(flatten_tensors(item, f"{prefix}.{key}" if prefix else key, depth + 1))
    return found


def call_module(module: Any, inputs: dict[str, np.ndarray[Any, Any]]) -> NamedArrays:
    """Call ``module`` with keyword arguments when every input name is a parameter of ``forward``,
    else positionally in name order. Outputs: a tensor is ``output``; tuples/lists ``output.0``...;
    dicts by key."""
    import torch

    tensors = {name: torch.from_numpy(np.array(value, copy=True)) for name, value in inputs.items()}
    params: set[str] = set()
    try:
        params = set(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        params = set()
    with torch.inference_mode():
        if tensors and set(tensors) <= params:
            result = module(**tensors)
        else:
            result = module(*(tensors[name] for name in sorted(tensors)))
    return flatten_tensors(result, "output")
