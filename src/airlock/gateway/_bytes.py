"""KServe v2 ``BYTES`` tensors: text and byte strings, checked before anything is allocated.

In the gateway a BYTES tensor is a numpy object array of ``bytes`` (row major, its shape the
request's) when it was made on the loop (a small body), else a
:class:`~airlock.sandbox._messages.PackedBytes`: u64 end offsets and one buffer, as the worker frame
carries it, checked with vectorised bounds and never stepped through element by element in the
gateway process (a tenant's codec and the worker do that work). Two encodings, as the KServe v2 protocol and its binary tensor extension define them:

* JSON: ``data`` is an array of strings, flat (as many as the shape's elements) or nested exactly
  as the shape (each level a list of the dimension's length, depth = rank). Each string is UTF-8
  text; one holding a lone surrogate (``"\\ud800"``: not text, cannot be UTF-8) is refused, and so is
  any non-string element (numbers, ``null``, objects).
* binary: each element is a 4-byte little-endian unsigned length followed by that many bytes, back
  to back; ``binary_data_size`` is the sum of all of them. The bytes are anything (no UTF-8 check:
  a model that takes text checks its own inputs, see ``sandbox/_runtimes/onnx_rt.py``).

Bounds, all before allocating: the element count from the shape may not exceed what the body
could encode (:func:`max_elements`: 2 bytes an element, JSON's ``"",``; binary needs 4), so a shape of ``[2**40]`` with a
tiny body is refused before an array is made; each element and all elements together are at most
``limit`` bytes (the request size limit, ``[server] max_body_bytes``); a length prefix that runs
past ``binary_data_size``, or bytes left after the last element, are refused. Error messages are
fixed phrases naming the tensor and an element index, never the caller's bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from airlock.sandbox._messages import PackedBytes

__all__ = [
    "BYTES",
    "BytesTensor",
    "bytes_from_binary",
    "bytes_from_json",
    "bytes_tensors",
    "bytes_to_binary",
    "bytes_to_json",
    "is_bytes",
    "max_elements",
    "tensor_bytes",
]

BYTES: Final = "BYTES"
_PREFIX: Final = struct.Struct("<I")


class BytesError(ValueError):
    """A BYTES tensor that breaks a rule; the message is a fixed phrase about the caller's request."""


def max_elements(limit: int) -> int:
    """The most BYTES elements a body of ``limit`` bytes can encode: 2 bytes an element in JSON
    (``"",``), 4 in binary; bounds every element count (and its 8-byte offsets) before allocating."""
    return max(limit, 2) // 2


def is_bytes(array: Any) -> bool:
    return bool(array.dtype.kind == "O")


def tensor_bytes(array: Any) -> int:
    """Bytes a tensor carries (budgets): a BYTES tensor counts its elements' bytes and 4 per element
    (its binary size), a numeric one its buffer. A packed BYTES tensor is counted without a step
    per element."""
    if isinstance(array, PackedBytes):
        return len(array.blob) + 4 * array.size
    if is_bytes(array):
        return int(sum(len(item) for item in array.reshape(-1).tolist()) + 4 * array.size)
    return int(array.nbytes)


def _empty(shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    return np.empty(shape, dtype=object)


def bytes_from_json(name: str, shape: tuple[int, ...], data: object, limit: int) -> np.ndarray[Any, Any]:
    """A BYTES input from JSON ``data`` (flat or nested as ``shape``); ``limit``: bytes in all."""
    if not isinstance(data, list):
        raise BytesError(f"input {name!r}: data must be a JSON array")
    count = math.prod(shape)
    if count > max_elements(limit):
        raise BytesError(f"input {name!r}: shape {list(shape)} has more elements than the body can hold")
    if not any(isinstance(item, list) for item in data):
        flat: list[object] = data  # flat (or rank 1): each element is checked below
    else:
        flat = _nested(name, shape, data)
    if len(flat) != count:
        raise BytesError(f"input {name!r}: data has {len(flat)} elements, shape {list(shape)} needs {count}")
    array = _empty((count,))
    total = 0
    for index, item in enumerate(flat):
        if not isinstance(item, str):
            raise BytesError(f"input {name!r}: BYTES element {index} is not a string")
        try:
            raw = item.encode("utf-8")
        except UnicodeEncodeError:
            raise BytesError(f"input {name!r}: BYTES element {index} is not valid Unicode text") from None
        total += len(raw)
        if total > limit:
            raise BytesError(f"input {name!r}: BYTES elements exceed {limit} bytes")
        array[index] = raw
    return array.reshape(shape)


def _nested(name: str, shape: tuple[int, ...], data: list[Any]) -> list[object]:
    """The leaves of ``data`` nested exactly as ``shape`` (depth = rank, each list its dimension's
    length), level by level: the work is bounded by the nodes the JSON parser already built."""
    level: list[object] = [data]
    for depth, dim in enumerate(shape):
        below: list[object] = []
        for item in level:
            if not isinstance(item, list) or len(item) != dim:
                raise BytesError(
                    f"input {name!r}: data is neither flat nor nested as shape {list(shape)} "
                    f"(at depth {depth})"
                )
            below.extend(item)
        level = below
    return level


def bytes_from_binary(
    name: str, shape: tuple[int, ...], chunk: memoryview, limit: int
) -> np.ndarray[Any, Any]:
    """A BYTES input from its binary section: length-prefixed elements filling ``chunk`` exactly."""
    count = math.prod(shape)
    size = chunk.nbytes
    if count * _PREFIX.size > size:
        raise BytesError(
            f"input {name!r}: {count} BYTES elements need at least {count * _PREFIX.size} bytes, "
            f"binary_data_size is {size}"
        )
    if size > limit:
        raise BytesError(f"input {name!r}: BYTES elements exceed {limit} bytes")
    array = _empty((count,))
    position = 0
    unpack = _PREFIX.unpack_from
    for index in range(count):
        if position + _PREFIX.size > size:
            raise BytesError(
                f"input {name!r}: BYTES element {index}'s length prefix runs past binary_data_size"
            )
        (length,) = unpack(chunk, position)
        position += _PREFIX.size
        if length > size - position:
            raise BytesError(f"input {name!r}: BYTES element {index}'s length runs past binary_data_size")
        array[index] = bytes(chunk[position : position + length])
        position += length
    if position != size:
        raise BytesError(
            f"input {name!r}: binary_data_size has {size - position} bytes after the last element"
        )
    return array.reshape(shape)


class BytesOutputError(ValueError):
    """A model's BYTES output that cannot be sent as asked (fixed text)."""


def _items(array: Any) -> list[bytes]:
    if isinstance(array, PackedBytes):
        return array.items()
    items: list[bytes] = array.reshape(-1).tolist()
    if not all(isinstance(item, bytes) for item in items):
        raise BytesOutputError("a BYTES output holds something other than byte strings")
    return items


def bytes_to_json(array: Any) -> list[str]:
    """A BYTES output as JSON strings: each element must be UTF-8 (else ask for it as binary)."""
    try:
        return [item.decode("utf-8") for item in _items(array)]
    except UnicodeDecodeError:
        raise BytesOutputError("a BYTES output is not UTF-8 text; request it with binary_data") from None


def bytes_to_binary(array: Any) -> bytes:
    """A BYTES output in the binary extension's layout (u32 little-endian length + bytes each)."""
    parts: list[bytes] = []
    pack = _PREFIX.pack
    for item in _items(array):
        if len(item) > 0xFFFFFFFF:
            raise BytesOutputError("a BYTES output element exceeds 4 GiB")
        parts.append(pack(len(item)))
        parts.append(item)
    return b"".join(parts)


@dataclass(frozen=True)
class BytesTensor:
    """One BYTES tensor as the guard sees it: its name, shape and elements (row major)."""

    name: str
    shape: tuple[int, ...]
    items: Sequence[bytes]


def bytes_tensors(tensors: Mapping[str, Any]) -> list[BytesTensor]:
    """The BYTES tensors among ``tensors`` (numeric ones are left out); a step per element: called
    only where a guard needs the elements, and for many of them in the tenant's codec."""
    return [
        BytesTensor(
            name,
            tuple(array.shape),
            _items(array) if isinstance(array, PackedBytes) else array.reshape(-1).tolist(),
        )
        for name, array in tensors.items()
        if is_bytes(array)
    ]
