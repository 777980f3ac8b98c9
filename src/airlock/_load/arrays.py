"""Turn planned tensor views into numpy arrays (and torch tensors) over the mapped bytes.

A native-byte-order view is zero-copy: an ``ndarray`` with the planned shape, strides and offset
over the storage's bytes (the plan already proved it lies inside them; numpy checks again).
Big-endian storages and tensors with torch's lazy ``neg`` / ``conj`` bits are materialised as
native copies. numpy is imported here, lazily, never by ``import airlock``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airlock._load.model import TensorRef
from airlock.errors import FormatError, UsageError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["raw_array", "to_numpy", "to_torch"]


def _base(ref: TensorRef, mapped: memoryview) -> memoryview:
    st = ref.storage
    if st.data is not None:
        return memoryview(st.data)[st.offset : st.offset + st.nbytes]
    return mapped[st.offset : st.offset + st.nbytes]


def raw_array(ref: TensorRef, mapped: memoryview) -> np.ndarray[Any, Any]:
    """The tensor as an array of unsigned integers of its item size, in native byte order."""
    import numpy as np

    carrier = ref.dtype.carrier()
    if ref.numel == 0:
        return np.zeros(ref.shape, dtype=carrier)
    size = ref.dtype.itemsize
    arr: np.ndarray[Any, Any] = np.ndarray(
        ref.shape,
        dtype=carrier,
        buffer=_base(ref, mapped),
        offset=ref.offset * size,
        strides=tuple(s * size for s in ref.stride),
    )
    if ref.storage.big_endian and ref.dtype.swap_unit > 1:
        flat = np.array(arr, copy=True, order="C").reshape(-1)  # never swap the mapping in place
        flat.view(np.dtype(f"u{ref.dtype.swap_unit}")).byteswap(inplace=True)
        arr = flat.reshape(ref.shape)
    return arr


def to_numpy(ref: TensorRef, mapped: memoryview) -> np.ndarray[Any, Any]:
    import numpy as np

    arr = raw_array(ref, mapped).view(ref.dtype.to_numpy())
    if ref.neg or ref.conj:
        if ref.dtype.numpy is None:
            raise FormatError(f"torch {ref.dtype.name} tensor with a lazy neg/conj bit cannot be realised")
        if ref.neg:
            arr = np.negative(arr)
        if ref.conj:
            arr = np.conj(arr)
    return arr


def to_torch(ref: TensorRef, mapped: memoryview) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise UsageError("framework='pt' needs torch (pip install 'model-airlock[torch]')") from exc
    target = getattr(torch, ref.dtype.name, None)
    if not isinstance(target, torch.dtype):
        raise FormatError(f"dtype {ref.dtype.name} has no torch equivalent")
    if ref.dtype.numpy is not None and not ref.dtype.numpy.startswith("ml:"):
        arr = to_numpy(ref, mapped)
        return torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    raw = raw_array(ref, mapped)
    if raw.dtype.kind != "u":
        raise FormatError(f"dtype {ref.dtype.name} cannot be handed to torch")
    tensor = torch.from_numpy(raw if raw.flags.writeable else raw.copy()).view(target)
    if ref.neg:
        tensor = tensor.neg()
    if ref.conj:
        tensor = tensor.conj().resolve_conj()
    return tensor
