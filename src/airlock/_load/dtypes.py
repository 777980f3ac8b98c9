"""Element types: torch's names, sizes, byte-swap units, numpy and safetensors equivalents.

numpy (and ml_dtypes for bfloat16 / float8) is imported lazily, only when an array is made; the
table itself is plain data so the planning code runs without numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from airlock.errors import FormatError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DTYPES", "STORAGE_TYPES", "DType", "dtype_from_numpy"]


@dataclass(frozen=True)
class DType:
    """One element type. ``name`` is torch's (``float32``); ``numpy`` a numpy type string, an
    ``ml_dtypes`` name prefixed ``ml:``, or None when numpy has no such type (the array is then a
    one-field structured view named after the dtype, bit-exact)."""

    name: str
    itemsize: int
    #: size of the scalar parts byte order applies to (complex64: 4)
    swap_unit: int
    numpy: str | None
    #: the safetensors dtype code, or None when safetensors cannot hold it
    safetensors: str | None

    def to_numpy(self) -> np.dtype[Any]:
        import numpy as np

        if self.numpy is None:
            if self.name == "complex32":
                return np.dtype([("real", "<f2"), ("imag", "<f2")])
            return np.dtype([(self.name, f"<u{self.itemsize}")])
        if self.numpy.startswith("ml:"):
            import ml_dtypes

            found: np.dtype[Any] = np.dtype(getattr(ml_dtypes, self.numpy[3:]))
            return found
        return np.dtype(self.numpy)

    def carrier(self) -> np.dtype[Any]:
        """An unsigned integer type of the same size: moves the bytes without interpreting them."""
        import numpy as np

        return (
            np.dtype(f"<u{self.itemsize}") if self.itemsize in (1, 2, 4, 8) else np.dtype(f"V{self.itemsize}")
        )


def _d(name: str, size: int, numpy: str | None, st: str | None, unit: int | None = None) -> DType:
    return DType(name, size, unit or size, numpy, st)


#: Every dtype torch 2.13 can save as a dense tensor.
DTYPES: Final[dict[str, DType]] = {
    d.name: d
    for d in (
        _d("bool", 1, "|b1", "BOOL"),
        _d("uint8", 1, "|u1", "U8"),
        _d("int8", 1, "|i1", "I8"),
        _d("int16", 2, "<i2", "I16"),
        _d("uint16", 2, "<u2", "U16"),
        _d("int32", 4, "<i4", "I32"),
        _d("uint32", 4, "<u4", "U32"),
        _d("int64", 8, "<i8", "I64"),
        _d("uint64", 8, "<u8", "U64"),
        _d("float16", 2, "<f2", "F16"),
        _d("bfloat16", 2, "ml:bfloat16", "BF16"),
        _d("float32", 4, "<f4", "F32"),
        _d("float64", 8, "<f8", "F64"),
        _d("complex32", 4, None, None, 2),
        _d("complex64", 8, "<c8", "C64", 4),
        _d("complex128", 16, "<c16", None, 8),
        _d("float8_e5m2", 1, "ml:float8_e5m2", "F8_E5M2"),
        _d("float8_e4m3fn", 1, "ml:float8_e4m3fn", "F8_E4M3"),
        _d("float8_e5m2fnuz", 1, "ml:float8_e5m2fnuz", "F8_E5M2FNUZ"),
        _d("float8_e4m3fnuz", 1, "ml:float8_e4m3fnuz", "F8_E4M3FNUZ"),
        _d("float8_e8m0fnu", 1, "ml:float8_e8m0fnu", "F8_E8M0"),
        _d("float4_e2m1fn_x2", 1, None, None),
        _d("bits1x8", 1, None, None),
        _d("bits2x4", 1, None, None),
        _d("bits4x2", 1, None, None),
        _d("bits8", 1, None, None),
        _d("bits16", 2, None, None),
    )
}

#: torch's aliases for the same dtype objects (``torch.float`` is ``torch.float32``).
ALIASES: Final = {
    "float": "float32", "double": "float64", "half": "float16", "short": "int16", "int": "int32",
    "long": "int64", "cfloat": "complex64", "cdouble": "complex128", "chalf": "complex32",
}  # fmt: skip

#: Legacy typed storage classes named in persistent ids, and the dtype each holds.
STORAGE_TYPES: Final[dict[str, str]] = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16", "LongStorage": "int64",
    "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "BFloat16Storage": "bfloat16", "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64", "UntypedStorage": "uint8",
}  # fmt: skip
#: quantized storages: torch's quantized dtype and the integer type of its representation; the
#: sub-byte packed ones (no representation of their own) are refused by name
QUANTIZED_STORAGES: Final[dict[str, tuple[str, str | None]]] = {
    "QInt8Storage": ("qint8", "int8"), "QUInt8Storage": ("quint8", "uint8"), "QInt32Storage": ("qint32", "int32"),
    "QUInt4x2Storage": ("quint4x2", None), "QUInt2x4Storage": ("quint2x4", None),
}  # fmt: skip


def torch_dtype(name: str) -> DType:
    """The dtype named ``torch.<name>``; FormatError for quantized and unknown ones."""
    name = ALIASES.get(name, name)
    found = DTYPES.get(name)
    if found is None:
        raise FormatError(
            f"dtype torch.{name} is not supported by airlock.load (supported: {', '.join(DTYPES)})"
        )
    return found


_NUMPY_TO_NAME: Final = {
    d.numpy.lstrip("<|"): d.name for d in DTYPES.values() if d.numpy and ":" not in d.numpy
}


def dtype_from_numpy(descr: str) -> DType | None:
    """The dtype of an npy / numpy type string (``<f4``), or None when torch has no equivalent.

    Only little-endian or byte-order-free strings are accepted here; the caller byte-swaps ``>``.
    """
    code = descr.lstrip("<>|=")
    name = _NUMPY_TO_NAME.get(code)
    return DTYPES[name] if name is not None else None
