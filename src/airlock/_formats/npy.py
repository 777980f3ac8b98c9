"""NumPy ``.npy`` arrays (format versions 1.0, 2.0, 3.0); ``.npz`` is a zip of them.

Layout (``numpy.lib.format``): ``\\x93NUMPY``, major and minor version bytes, the header length
(2 bytes in 1.0, 4 bytes after), then a Python dict literal ``{'descr': ..., 'fortran_order':
..., 'shape': (...)}`` and the raw data. The header is parsed with airlock's own bounded literal
parser (never ``eval``). When the dtype holds Python objects anywhere (``|O``, also inside
structured fields or sub-arrays), numpy stores the data as a pickle: it is handed to the pickle
analysis. Otherwise the data must be exactly ``prod(shape) * itemsize`` bytes: fewer is a
format error; more is a finding (numpy ignores the surplus, so it can hide anything).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator
from typing import Final

from airlock._formats.base import Fact, Issue, PickleStream, ReadContext
from airlock._formats.pyliteral import Literal, parse_literal
from airlock.errors import FormatError, LimitError
from airlock.results import Severity

__all__ = ["NpyReader", "dtype_info"]

MAGIC: Final = b"\x93NUMPY"
_TYPESTR: Final = re.compile(r"([<>|=]?)([?bBhHiIlLqQefdgFDGOSaUVmMuc])([0-9]*)(\[[A-Za-z0-9]+\])?", re.ASCII)
#: sizes of one-character type codes without an explicit size
_CODE_SIZES: Final = {
    "?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8, "q": 8, "Q": 8,
    "e": 2, "f": 4, "d": 8, "g": 16, "F": 8, "D": 16, "G": 32, "O": 8, "M": 8, "m": 8, "c": 1,
}  # fmt: skip
_MAX_DTYPE_DEPTH: Final = 16
#: the sizes numpy accepts after a one-character code (``i8``, ``f2``, ``O4`` is an 8-byte object)
_SIZED: Final[dict[str, dict[int, int]]] = {
    "b": {1: 1}, "i": {1: 1, 2: 2, 4: 4, 8: 8}, "u": {1: 1, 2: 2, 4: 4, 8: 8},
    "f": {2: 2, 4: 4, 8: 8, 16: 16}, "c": {8: 8, 16: 16, 32: 32}, "O": {4: 8, 8: 8},
    "m": {8: 8}, "M": {8: 8},
}  # fmt: skip
#: codes whose digits are a length (bytes; characters of 4 bytes for U)
_FLEXIBLE: Final = frozenset("SaUV")
_MAX_ITEMSIZE: Final = 2**31 - 1
_TIME_UNITS: Final = frozenset("Y M W D h m s ms us ns ps fs as generic".split())


class NpyReader:
    name = "npy"

    def sniff(self, head: bytes, size: int) -> bool:
        return head.startswith(MAGIC)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        size = len(data)
        if size < 10:
            raise FormatError(f"{size}-byte file is too short for an npy header (at least 10 bytes)")
        major, minor = data[6], data[7]
        if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
            raise FormatError(f"npy format version {major}.{minor} is not 1.0, 2.0 or 3.0", offset=6)
        if major == 1:
            (hlen,) = struct.unpack_from("<H", data, 8)
            start = 10
        else:
            if size < 12:
                raise FormatError(f"{size}-byte file is too short for an npy {major}.0 header (12 bytes)")
            (hlen,) = struct.unpack_from("<I", data, 8)
            start = 12
        if hlen > ctx.limits.max_header_bytes:
            raise LimitError(
                f"npy header length {hlen} exceeds {ctx.limits.max_header_bytes} (limit max_header_bytes)",
                offset=8,
            )
        end = start + hlen
        if end > size:
            raise FormatError(f"npy header length {hlen} runs past the end of the {size}-byte file", offset=8)
        encoding = "utf-8" if major == 3 else "latin-1"
        try:
            text = bytes(data[start:end]).decode(encoding)
        except UnicodeDecodeError as exc:
            raise FormatError(f"npy header is not valid {encoding}: {exc.reason}", offset=start) from exc
        # numpy reads Python 2 long literals (3L) in 1.0 and 2.0 headers
        header = parse_literal(text, ctx.limits.max_header_bytes, py2_longs=major < 3)
        descr, fortran, shape = _header_fields(header)
        itemsize, has_object = dtype_info(descr)
        if isinstance(descr, tuple) and not has_object:
            # A sub-array dtype for the whole array: numpy reads the items, then cannot give them
            # the header's shape and refuses the file. (An object one is unpickled first, below.)
            raise FormatError(f"npy descr {descr!r:.80} is a sub-array dtype, which numpy cannot load")
        if has_object:
            # numpy: pickle.load of the whole array (allow_pickle=True) — analyse that pickle.
            yield PickleStream(data, end, "npy object array")
            return
        del fortran  # layout does not change the byte count
        expected = math.prod(shape) * itemsize
        available = size - end
        if available < expected:
            raise FormatError(
                f"npy data is {available} bytes, shape {shape} x itemsize {itemsize} needs {expected}",
                offset=end,
            )
        if available > expected:
            yield Issue(
                "npy.trailing-data",
                Severity.SUSPICIOUS,
                f"{available - expected} bytes after the array data (shape {shape} x itemsize {itemsize} "
                f"= {expected}); numpy ignores them, so they can hide anything",
                offset=end + expected,
            )


def _header_fields(header: Literal) -> tuple[Literal, bool, tuple[int, ...]]:
    if not isinstance(header, dict):
        raise FormatError(f"npy header is a {type(header).__name__}, not a dict")
    keys = set(header)
    if keys != {"descr", "fortran_order", "shape"}:
        raise FormatError(
            f"npy header keys {sorted(map(repr, keys))} are not exactly 'descr', 'fortran_order', 'shape'"
        )
    fortran = header["fortran_order"]
    if not isinstance(fortran, bool):
        raise FormatError(f"npy fortran_order is {fortran!r}, not True or False")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise FormatError(f"npy shape {shape!r} is not a tuple of non-negative integers")
    return header["descr"], fortran, tuple(n for n in shape if isinstance(n, int))


def dtype_info(descr: Literal, depth: int = 0) -> tuple[int, bool]:
    """(itemsize, holds Python objects) of an npy ``descr``, as ``numpy.lib.format`` reads it."""
    if depth > _MAX_DTYPE_DEPTH:
        raise FormatError(f"npy dtype nested deeper than {_MAX_DTYPE_DEPTH} levels")
    if isinstance(descr, str):
        return _typestr(descr)
    if isinstance(descr, tuple):
        # (base, shape): a sub-array dtype.
        if len(descr) != 2:
            raise FormatError(f"npy sub-array dtype {descr!r} is not (dtype, shape)")
        size, obj = dtype_info(descr[0], depth + 1)
        return size * _count(descr[1]), obj
    if isinstance(descr, list):
        total = 0
        has_object = False
        seen: set[Literal] = set()
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                raise FormatError(f"npy structured field {field!r} is not (name, dtype[, shape])")
            name = field[0]
            if not (isinstance(name, str) or (isinstance(name, tuple) and len(name) == 2)):
                raise FormatError(f"npy field name {name!r} is not a string or (title, name)")
            pad = name == "" and isinstance(field[1], str) and field[1].lstrip("<>|=").startswith("V")
            if not pad:
                # numpy refuses a name or title used twice; airlock must not size what numpy refuses.
                for label in name if isinstance(name, tuple) else (name,):
                    if label in seen:
                        raise FormatError(
                            f"npy structured dtype uses the field name or title {label!r} twice"
                        )
                    seen.add(label)
            size, obj = dtype_info(field[1], depth + 1)
            if len(field) == 3:
                size *= _count(field[2])
            total += size
            has_object = has_object or obj
        return total, has_object
    raise FormatError(f"npy descr {descr!r} is not a type string, a field list or a sub-array")


def _count(shape: Literal) -> int:
    if type(shape) is int and shape >= 0:
        return shape
    if isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape):
        return math.prod(n for n in shape if isinstance(n, int))
    raise FormatError(f"npy sub-array shape {shape!r} is not a non-negative int or tuple of them")


def _typestr(text: str) -> tuple[int, bool]:
    """Size a numpy type string exactly as ``numpy.dtype`` does, or refuse what numpy refuses."""
    match = _TYPESTR.fullmatch(text)
    if match is None:
        raise FormatError(f"npy type string {text!r} is not one airlock can size")
    kind, digits, unit = match.group(2), match.group(3), match.group(4)
    if unit is not None and (kind not in "mM" or unit[1:-1] not in _TIME_UNITS):
        raise FormatError(f"npy type string {text!r}: only datetimes take a unit, one of numpy's")
    if kind in _FLEXIBLE:
        if not digits:
            if kind == "a":
                raise FormatError(f"npy type string {text!r} has no size")
            return 0, False
        count = int(digits)
        size = count * (4 if kind == "U" else 1)
        if size >= _MAX_ITEMSIZE:
            raise FormatError(f"npy type string {text!r}: an item of {size} bytes is more than numpy allows")
        return size, False
    if not digits:
        if kind not in _CODE_SIZES:
            raise FormatError(f"npy type string {text!r} has no size")
        return _CODE_SIZES[kind], kind == "O"
    sizes = _SIZED.get(kind, {})
    sized = sizes.get(int(digits)) if len(digits) <= 3 else None
    if sized is None:
        raise FormatError(f"npy type string {text!r}: numpy has no {kind!r} type of {digits} bytes")
    return sized, kind == "O"


#: The instance the registry loads (``airlock._formats.registry.READERS``).
READER: Final = NpyReader()
