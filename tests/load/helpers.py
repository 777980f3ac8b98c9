"""Bit-exact comparison of airlock.load output against torch tensors (tests only)."""

from __future__ import annotations

from typing import Any


def torch_bytes(tensor: Any) -> bytes:
    """The tensor's values as raw bytes in logical (C) order, after lazy conj/neg bits."""
    import torch

    t = tensor.detach().resolve_conj().resolve_neg().contiguous()
    if not t.numel():
        return b""
    # contiguous() leaves size-1 dimensions with any stride (0 included); the elements are dense
    flat = t.as_strided((t.numel(),), (1,))
    return bytes(flat.view(torch.uint8).numpy().tobytes())


def numpy_bytes(array: Any) -> bytes:
    import numpy as np

    return np.ascontiguousarray(array).tobytes()


def assert_same(got: Any, expected: Any, name: str) -> None:
    """``got`` (numpy array or torch tensor) equals the torch tensor ``expected`` bit for bit."""
    import torch

    assert tuple(got.shape) == tuple(expected.shape), (name, got.shape, expected.shape)
    if isinstance(got, torch.Tensor):
        assert got.dtype == expected.dtype, (name, got.dtype, expected.dtype)
        assert torch_bytes(got) == torch_bytes(expected), name
    else:
        assert numpy_bytes(got) == torch_bytes(expected), name
