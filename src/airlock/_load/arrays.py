"""Turn planned tensor views into numpy arrays (and torch tensors) over the mapped bytes.

A native-byte-order view is zero-copy: an ``ndarray`` with the planned shape, strides and offset
over the storage's bytes (the plan already proved it lies inside them; numpy checks again).
Byte-swapped storages and tensors with torch's lazy ``neg`` / ``conj`` bits are materialised at
the *storage* level: one private copy of the storage's bytes, transformed, and the planned view
over that copy. Memory is therefore bounded by the storage, never by a view's logical size (a
stride-0 view of 16 bytes as ``(2**14, 2**14)`` stays 16 bytes). numpy is imported here, lazily,
never by ``import airlock``.

The transforms follow torch bit for bit (see docs/convert.md, "Byte order and lazy bits"):
storages are swapped in units of the storage type's scalar size; ``neg`` flips the sign bit of
floats and complex parts and negates integers in two's complement; ``conj`` flips the sign of
the imaginary part. Where torch's own result depends on its kernel (half-precision NaNs, complex
NaN or zero parts under ``neg``) the tensor is refused. Lazy bits on dtypes torch itself cannot resolve
(``neg_cpu`` is not implemented for them) are refused, and so is a lazy negation of complex data
holding NaN or zero parts, whose result in torch depends on the element's position in its
vectorised loops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from airlock._load.model import MAX_LOGICAL_BYTES, Storage, TensorRef
from airlock.errors import FormatError, UsageError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Prepared", "raw_array", "to_numpy", "to_torch"]

#: transformed storage copies for one load, keyed by (storage identity, dtype, neg, conj)
Prepared = dict[tuple[int, str, bool, bool], Any]

_ALIGN: Final = 64
_SIGN: Final = {2: 0x8000, 4: 0x8000_0000, 8: 0x8000_0000_0000_0000}
_INTS: Final = frozenset({"int8", "int16", "int32", "int64", "uint8"})
_FLOATS: Final = frozenset({"float16", "bfloat16", "float32", "float64"})
_COMPLEX: Final = {"complex32": "float16", "complex64": "float32", "complex128": "float64"}


def _base(st: Storage, mapped: memoryview) -> memoryview:
    if st.data is not None:
        return memoryview(st.data)[st.offset : st.offset + st.nbytes]
    return mapped[st.offset : st.offset + st.nbytes]


def check_lazy_bits(ref: TensorRef, where: str) -> None:
    """FormatError when ``ref`` carries a lazy bit torch cannot resolve for its dtype."""
    name = ref.dtype.name
    if ref.neg and not (name in _INTS or name in _FLOATS or (name in _COMPLEX and name != "complex32")):
        raise FormatError(f"{where}: a lazy negation on a {name} tensor (torch cannot resolve it either)")
    if ref.conj and name not in _COMPLEX:
        raise FormatError(f"{where}: a lazy conjugation on a {name} tensor, which is not complex")


def _negate_float(words: np.ndarray[Any, Any], name: str, ref: TensorRef) -> None:
    """Negate float scalars stored as unsigned words, in place, exactly as torch does.

    torch negates half-precision NaNs differently in the vectorised body of its loops (a sign
    flip) and in their scalar tails (through float32: float16 signalling NaNs quieted, bfloat16
    NaNs made canonical), so which one an element gets depends on its position and the CPU's
    vector width. Half-precision data holding a NaN is refused; every other value is a sign flip.
    """
    size = words.dtype.itemsize
    if name in ("float16", "bfloat16"):
        exponent, mantissa = (0x7C00, 0x03FF) if name == "float16" else (0x7F80, 0x007F)
        if ((words & exponent == exponent) & (words & mantissa != 0)).any():
            raise FormatError(
                f"tensor over storage {ref.storage.key!r}: a lazy negation or conjugation of {name} data "
                "holding NaNs; torch's result for those depends on its CPU kernel, so airlock refuses it"
            )
    words ^= words.dtype.type(_SIGN[size])


def _transform(flat: np.ndarray[Any, Any], ref: TensorRef) -> None:
    import numpy as np

    name = ref.dtype.name
    if name in _INTS:
        if ref.neg:
            signed = flat.view(np.dtype(f"<i{ref.dtype.itemsize}"))
            np.negative(signed, out=signed)
        return
    if name in _FLOATS:
        _negate_float(flat.view(np.dtype(f"<u{ref.dtype.itemsize}")), name, ref)
        return
    part = _COMPLEX[name]
    words = flat.view(np.dtype(f"<u{ref.dtype.itemsize // 2}"))
    real, imag = words[0::2], words[1::2]
    if ref.neg and _has_nan_or_zero(words):
        # torch negates complex numbers with a vector subtraction (0 - z: NaNs quieted, signs kept,
        # -0 becomes +0) in the body of its loops and with a scalar sign flip in their tails, so
        # which elements get which depends on their position and the CPU's vector width
        raise FormatError(
            f"tensor over storage {ref.storage.key!r}: a lazy negation on {name} data holding NaN or "
            "signed zero parts; torch's result for those depends on its CPU kernel, so airlock refuses it"
        )
    if ref.neg and ref.conj:
        # torch resolves both bits as conj(0 - z): an IEEE subtraction (NaNs quieted with their
        # sign kept, -0 and +0 both become +0), then the imaginary sign flipped
        _subtract_from_zero(real)
        _subtract_from_zero(imag)
        imag ^= imag.dtype.type(_SIGN[imag.dtype.itemsize])
        return
    if ref.neg:
        _negate_float(real, part, ref)
    if ref.neg != ref.conj:
        _negate_float(imag, part, ref)


def _has_nan_or_zero(words: np.ndarray[Any, Any]) -> bool:
    size = words.dtype.itemsize
    sign = words.dtype.type(_SIGN[size])
    exponent = words.dtype.type(0x7F80_0000 if size == 4 else 0x7FF0 << 48)
    mantissa = words.dtype.type((1 << 23) - 1 if size == 4 else (1 << 52) - 1)
    nan = (words & exponent == exponent) & (words & mantissa != 0)
    return bool(nan.any() or (words & ~sign == 0).any())


def _subtract_from_zero(words: np.ndarray[Any, Any]) -> None:
    """``0.0 - x`` for float32/float64 scalars stored as unsigned words, in place."""
    size = words.dtype.itemsize
    sign = words.dtype.type(_SIGN[size])
    exponent, quiet = (0x7F80_0000, 0x0040_0000) if size == 4 else (0x7FF0 << 48, 1 << 51)
    mantissa = words.dtype.type((1 << 23) - 1 if size == 4 else (1 << 52) - 1)
    nan = (words & words.dtype.type(exponent) == exponent) & (words & mantissa != 0)
    zero = words & ~sign == 0
    keep = words[nan] | words.dtype.type(quiet)
    words ^= sign
    words[zero] = 0
    words[nan] = keep


def _prepared(ref: TensorRef, mapped: memoryview, cache: Prepared | None, align: bool) -> Any:
    """The bytes ``ref`` views: the mapping itself, or a transformed private copy of its storage.

    ``align``: the storage must start on a 64-byte boundary (torch's kernels assume aligned
    elements and crash on a misaligned complex128; a zip member may start anywhere). A
    misaligned storage is then copied once, like a transformed one.
    """
    import numpy as np

    st = ref.storage
    base = _base(st, mapped)
    misaligned = align and st.nbytes > 0 and np.frombuffer(base, dtype=np.uint8).ctypes.data % _ALIGN != 0
    if st.swap <= 1 and not ref.neg and not ref.conj and not misaligned:
        return base
    key = (id(st), ref.dtype.name if ref.neg or ref.conj else "", ref.neg, ref.conj)
    if cache is not None and key in cache:
        return cache[key]
    check_lazy_bits(ref, f"tensor over storage {st.key!r}")
    block = np.empty(st.nbytes + _ALIGN, dtype=np.uint8)
    skip = -block.ctypes.data % _ALIGN
    data = block[skip : skip + st.nbytes]
    data[:] = np.frombuffer(base, dtype=np.uint8)
    if st.swap > 1:
        whole = len(data) - len(data) % st.swap
        data[:whole].view(np.dtype(f"<u{st.swap}")).byteswap(inplace=True)
    if ref.neg or ref.conj:
        size = ref.dtype.itemsize
        _transform(data[: len(data) - len(data) % size], ref)
    if cache is not None:
        cache[key] = data
    return data


def raw_array(
    ref: TensorRef, mapped: memoryview, cache: Prepared | None = None, *, align: bool = False
) -> np.ndarray[Any, Any]:
    """The tensor as an array of unsigned integers of its item size, in native byte order, with
    lazy bits applied. A view (never a copy of the logical size) of the mapping or of one
    transformed (or, with ``align``, realigned) storage copy."""
    import numpy as np

    carrier = ref.dtype.carrier()
    if ref.numel == 0:
        return np.zeros(ref.shape, dtype=carrier)
    size = ref.dtype.itemsize
    arr: np.ndarray[Any, Any] = np.ndarray(
        ref.shape,
        dtype=carrier,
        buffer=_prepared(ref, mapped, cache, align),
        offset=ref.offset * size,
        strides=tuple(_byte_stride(n, s, size) for n, s in zip(ref.shape, ref.stride, strict=True)),
    )
    return arr


def _byte_stride(n: int, stride: int, size: int) -> int:
    """numpy's stride in bytes. A size-1 dimension is only indexed at 0, so its stride addresses
    nothing and torch accepts any there (``2**62`` included); where it does not fit numpy's signed
    64-bit byte stride it becomes 0. Other strides are bounded by the storage (``check_view``)."""
    if n == 1 and stride * size > MAX_LOGICAL_BYTES:
        return 0
    return stride * size


def to_numpy(
    ref: TensorRef, mapped: memoryview, cache: Prepared | None = None, *, align: bool = False
) -> np.ndarray[Any, Any]:
    return raw_array(ref, mapped, cache, align=align).view(ref.dtype.to_numpy())


def to_torch(ref: TensorRef, mapped: memoryview, cache: Prepared | None = None) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise UsageError("framework='pt' needs torch (pip install 'model-airlock[torch]')") from exc
    target = getattr(torch, ref.dtype.name, None)
    if not isinstance(target, torch.dtype):
        raise FormatError(f"dtype {ref.dtype.name} has no torch equivalent")
    if ref.dtype.numpy is not None and not ref.dtype.numpy.startswith("ml:"):
        arr = to_numpy(ref, mapped, cache, align=True)
        return torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    raw = raw_array(ref, mapped, cache, align=True)
    if raw.dtype.kind != "u":
        raise FormatError(f"dtype {ref.dtype.name} cannot be handed to torch")
    return torch.from_numpy(raw if raw.flags.writeable else raw.copy()).view(target)
