"""What the loader plans before it touches tensor bytes: storages (byte ranges) and tensor views.

Every offset, size and stride is checked against the bytes the storage really has before any
array is made (Python integers: no overflow, so a storage of 10**18 elements is simply too big).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from airlock._load.dtypes import DType
from airlock.errors import FormatError, LimitError

__all__ = ["MAX_DIMS", "MAX_LOGICAL_BYTES", "Storage", "TensorRef", "check_view", "contiguous_strides"]

#: torch allows at most 64 dimensions
MAX_DIMS: Final = 64
#: A tensor's logical size (elements x item size) must fit a signed 64-bit integer: torch refuses a
#: larger element count, numpy a larger array. Stride-0 and overlapping views are bounded by this
#: *logical* size, not by the bytes they view.
MAX_LOGICAL_BYTES: Final = 2**63 - 1


@dataclass(frozen=True, eq=False)
class Storage:
    """A run of bytes one or more tensors view.

    ``offset`` is absolute in the mapped file when ``data`` is None; otherwise the bytes are
    ``data`` (an inflated zip member, bytes inside the pickle) and ``offset`` is into ``data``.
    ``region`` is the file byte range the storage's bytes come from (shared by legacy views of one
    root storage); the converter walks regions in file order and reads each once. ``swap`` is the
    size of the units whose byte order is reversed when the storage is read (1: none). It is fixed
    once per storage, by the storage's own type, exactly as torch swaps a storage once when it is
    loaded, whatever dtypes tensors later view it with.
    """

    key: str
    nbytes: int
    offset: int
    region: tuple[int, int]
    swap: int = 1
    data: bytes | None = None


@dataclass(frozen=True, eq=False)
class TensorRef:
    """A dense strided tensor: ``shape``/``stride``/``offset`` in elements of ``dtype``."""

    storage: Storage
    dtype: DType
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    neg: bool = False
    conj: bool = False
    #: for the integer representation of a quantized tensor: torch's dtype and scheme
    quantized: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def byte_span(self) -> tuple[int, int] | None:
        """(first, end) bytes of the storage this tensor touches, or None when it is empty."""
        if self.numel == 0:
            return None
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        size = self.dtype.itemsize
        return self.offset * size, (last + 1) * size

    def is_contiguous(self) -> bool:
        return self.numel == 0 or all(
            n == 1 or s == c
            for n, s, c in zip(self.shape, self.stride, contiguous_strides(self.shape), strict=True)
        )


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides: list[int] = []
    step = 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


def _is_index(value: object) -> bool:
    return type(value) is int and value >= 0


def check_view(
    name: str, storage: Storage, dtype: DType, offset: object, shape: object, stride: object
) -> TensorRef:
    """A :class:`TensorRef` once the view is proven to lie inside its storage; FormatError otherwise."""
    if not isinstance(shape, tuple) or not all(_is_index(n) for n in shape):
        raise FormatError(f"tensor {name}: size {shape!r:.80} is not a tuple of non-negative integers")
    if not isinstance(stride, tuple) or not all(_is_index(s) for s in stride):
        raise FormatError(f"tensor {name}: stride {stride!r:.80} is not a tuple of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise LimitError(f"tensor {name}: {len(shape)} dimensions, more than torch's {MAX_DIMS}")
    if len(shape) != len(stride):
        raise FormatError(f"tensor {name}: size has {len(shape)} dimensions, stride has {len(stride)}")
    if not _is_index(offset):
        raise FormatError(f"tensor {name}: storage offset {offset!r:.40} is not a non-negative integer")
    assert isinstance(offset, int)
    ref = TensorRef(storage, dtype, offset, shape, stride)
    if ref.nbytes > MAX_LOGICAL_BYTES:
        raise LimitError(
            f"tensor {name}: size {shape} of {dtype.name} is {ref.nbytes} bytes, more than a 64-bit size "
            "can hold (torch refuses it too)"
        )
    # Also the product of the non-zero dimensions, not the element count: an empty tensor of size
    # (2**40, 2**40, 0) is refused by torch (its running product overflows before the 0), and one
    # of size (2**62, 0) of float32 is an array numpy cannot make (it bounds the non-zero
    # dimensions times the item size by a signed 64-bit size). Both bound every view below.
    spanned = dtype.itemsize
    for dim in shape:
        spanned *= dim or 1
    if spanned > MAX_LOGICAL_BYTES:
        raise LimitError(
            f"tensor {name}: size {shape} of {dtype.name} spans {spanned} bytes (its non-zero dimensions "
            "times the item size), more than a 64-bit size can hold (torch or numpy refuses it too)"
        )
    if offset > MAX_LOGICAL_BYTES or any(s > MAX_LOGICAL_BYTES for s in stride):
        raise LimitError(f"tensor {name}: storage offset or stride does not fit a 64-bit integer")
    span = ref.byte_span()
    if span is not None and span[1] > storage.nbytes:
        raise FormatError(
            f"tensor {name}: view (offset {offset}, size {shape}, stride {stride}, {dtype.name}) reaches "
            f"byte {span[1]} of a storage of {storage.nbytes} bytes"
        )
    return ref
