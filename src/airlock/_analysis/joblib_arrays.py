"""joblib's inline arrays: raw bytes (or a nested pickle) that follow a NumpyArrayWrapper BUILD.

joblib's unpickler, after BUILD of a ``NumpyArrayWrapper``, reads the array straight from the
stream: an optional alignment pad (one length byte, then that many bytes), then
``prod(shape) * itemsize`` raw bytes; for object arrays, a whole nested pickle instead. The
pickle machine calls :func:`make_build_hook`'s hook after every BUILD so those bytes are skipped
(or analysed) exactly as joblib would, instead of being misread as opcodes.

Array sizes come from the symbolic dtype and shape. When they cannot be established the stream
is a format error: fail closed rather than guess where the opcodes resume.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from airlock._analysis.pickle_vm import BuildHook, Call, Const, DictNode, Global, Node, TupleNode
from airlock.errors import FormatError

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["WRAPPER", "make_build_hook", "numpy_dtype_info"]

WRAPPER: Final = "joblib.numpy_pickle.NumpyArrayWrapper"
_DTYPE_CLASSES: Final = frozenset(
    {"numpy.dtype", "numpy.core.multiarray.dtype", "numpy._core.multiarray.dtype"}
)
_TYPESTR: Final = r"^[<>|=]?([biufcmMOSUVa?])(\d*)(\[\w+\])?$"  # compiled on first use
_SIZES: Final = {"b": 1, "?": 1, "O": 8, "m": 8, "M": 8}


def _state_item(state: Node, key: str) -> Node | None:
    if isinstance(state, DictNode):
        for k, v in state.items:
            if isinstance(k, Const) and k.value == key:
                return v
    return None


def numpy_dtype_info(node: Node) -> tuple[int, bool] | None:
    """(itemsize, has objects) of a pickled ``numpy.dtype(...)`` node, or None if unknown."""
    if not (isinstance(node, Call) and isinstance(node.func, Global) and node.func.dotted in _DTYPE_CLASSES):
        return None
    if not isinstance(node.args, TupleNode) or not node.args.items:
        return None
    first = node.args.items[0]
    if not (isinstance(first, Const) and isinstance(first.value, str)):
        return None
    match = re.match(_TYPESTR, first.value)
    if match is None:
        return None
    kind, digits = match.group(1), match.group(2)
    has_object = kind == "O"
    # BUILD state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
    state = node.states[-1] if node.states else None
    if isinstance(state, TupleNode) and len(state.items) >= 6:
        fields = state.items[4]
        if isinstance(fields, DictNode):
            for _key, value in fields.items:
                if isinstance(value, TupleNode) and value.items:
                    sub = numpy_dtype_info(value.items[0])
                    if sub is None:
                        return None
                    has_object = has_object or sub[1]
        elsize = state.items[5]
        if (
            isinstance(elsize, Const)
            and isinstance(elsize.value, int)
            and elsize.value > 0
            and kind in "VUSa"
        ):
            return elsize.value, has_object
        if state.items[2] is not None and not (
            isinstance(state.items[2], Const) and state.items[2].value is None
        ):
            return None  # sub-array dtypes: size depends on a shape we do not model
    if digits:
        return int(digits), has_object
    if kind in _SIZES:
        return _SIZES[kind], has_object
    return None


def make_build_hook(data: memoryview, nested: Callable[[int], int]) -> BuildHook:
    """A hook that skips joblib's inline array bytes; ``nested(pos)`` analyses an object array's
    nested pickle starting at ``pos`` and returns where it ends."""

    def hook(node: Node, pos: int) -> int:
        if not (isinstance(node, Call) and isinstance(node.func, Global) and node.func.dotted == WRAPPER):
            return pos
        state = node.states[-1] if node.states else None
        if state is None:
            raise FormatError("joblib array wrapper without state", offset=pos)
        dtype = _state_item(state, "dtype")
        shape = _state_item(state, "shape")
        info = numpy_dtype_info(dtype) if dtype is not None else None
        if info is None:
            raise FormatError("joblib array wrapper with a dtype airlock cannot size", offset=pos)
        itemsize, has_object = info
        if has_object:
            return nested(pos)
        if not isinstance(shape, TupleNode) or not all(
            isinstance(d, Const)
            and isinstance(d.value, int)
            and not isinstance(d.value, bool)
            and d.value >= 0
            for d in shape.items
        ):
            raise FormatError("joblib array wrapper with a shape that is not a tuple of integers", offset=pos)
        count = math.prod(
            int(d.value) for d in shape.items if isinstance(d, Const) and isinstance(d.value, int)
        )
        align = _state_item(state, "numpy_array_alignment_bytes")
        if align is not None and not (isinstance(align, Const) and align.value is None):
            if pos >= len(data):
                raise FormatError("joblib array: padding byte missing", offset=pos)
            pos += 1 + data[pos]
        size = count * itemsize
        if size > len(data) - pos:
            raise FormatError(
                f"joblib array of {size} bytes runs past the end of the data ({len(data) - pos} bytes left)",
                offset=pos,
            )
        return pos + size

    return hook
