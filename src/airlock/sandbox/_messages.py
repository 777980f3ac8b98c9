"""The meaning of frame headers: one schema per message type, tensors as raw little-endian buffers.

Every header is checked against its schema (exact key set, exact JSON types) before any field is
used; tensor tables are checked against the payload (contiguous, in order, sizes that add up, no
object dtypes, rank and count caps). Runs on both sides of the channel: standard library plus numpy.

Byte strings (KServe ``BYTES``, ONNX ``tensor(string)``) cross as dtype ``bytes``, never pickled:
the tensor's region of the payload is ``count`` little-endian u64 end offsets (one per element,
relative to the blob) followed by the blob of the elements back to back. The receiver checks the
ends before slicing: non-decreasing (no element overlaps another or runs backwards), the last one
exactly the blob's length (nothing overruns the region, no trailing bytes); ``count`` comes from the
shape and is bounded by the region (8 bytes an element). They become numpy object arrays of
``bytes``; text (``str`` elements, numpy ``U`` arrays) is sent as its UTF-8 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from airlock.errors import SandboxError

__all__ = [
    "BYTES_DTYPE",
    "DTYPES",
    "HOST_BYTES_PER_ELEMENT",
    "SCHEMAS",
    "PackedBytes",
    "Tensor",
    "TensorCaps",
    "check_header",
    "decode_tensors",
    "encode_tensors",
    "printable",
]

#: wire name -> numpy dtype string (little endian). bfloat16 needs ml_dtypes on the receiving side.
DTYPES: Final[Mapping[str, str]] = {
    "bool": "|b1",
    "uint8": "|u1",
    "int8": "|i1",
    "uint16": "<u2",
    "int16": "<i2",
    "uint32": "<u4",
    "int32": "<i4",
    "uint64": "<u8",
    "int64": "<i8",
    "float16": "<f2",
    "float32": "<f4",
    "float64": "<f8",
    "complex64": "<c8",
    "complex128": "<c16",
    "bfloat16": "bfloat16",
}
#: wire name of byte-string tensors (object arrays of ``bytes``); see the module docstring
BYTES_DTYPE: Final = "bytes"
#: what one element of a decoded byte-string tensor costs the receiver beyond its bytes: the
#: ``bytes`` object, the integer of its end and three pointers to it while the object array is
#: built (measured about 105 bytes on 64-bit CPython 3.11; a payload of 2-byte elements grew the
#: host tenfold). Each byte of the blob is held twice (the blob and the element).
HOST_BYTES_PER_ELEMENT: Final = 128
_END: Final = np.dtype("<u8")
_MAX_NAME: Final = 1024

# Field kinds: "str", "int", "str?" (string or null), "tensors", "options"
SCHEMAS: Final[Mapping[str, Mapping[str, str]]] = {
    # airlock -> zygote
    "spawn": {},
    # zygote -> airlock (once, when its imports are done)
    "hello": {"pid": "int"},
    # zygote -> airlock
    "spawned": {"pid": "int"},
    "exited": {"pid": "int", "status": "str"},
    # the worker could not fork a job (the sandbox's task budget is full): it stays up, the request fails
    "spawn_failed": {"error": "str"},
    # airlock -> job
    "load": {"runtime": "str", "definition": "str?", "threads": "int"},
    "state_dict": {},
    "infer": {"tensors": "tensors"},
    # a text model: ``request`` is the JSON of one generation request (text_gguf.check_request)
    "generate": {"request": "str"},
    # between two tokens: stop generating, answer ``done`` with finish "cancelled"
    "cancel": {},
    "close": {},
    # job -> airlock
    "ready": {"pid": "int", "layers": "str"},
    "loaded": {"kind": "str", "summary": "str"},
    "tensors": {"tensors": "tensors"},
    # one per generated token (its new text, maybe empty), then one ``done``
    "text": {"text": "str"},
    "done": {"finish": "str", "prompt_tokens": "int", "completion_tokens": "int"},
    "error": {"stage": "str", "error": "str", "message": "str"},
}


class PackedBytes:
    """A byte-string tensor kept as it crosses the channel: ``count`` u64 end offsets (one per
    element, relative to ``blob``) and the elements back to back in ``blob``; ``count`` is the
    shape's product. Built only through :meth:`checked` (or from an object array with
    :meth:`pack`): every check is vectorised or bounded (no Python step per element), so a process
    that only carries such a tensor (the gateway, between a tenant's codec and the worker frame)
    never pays per element. ``dtype`` is numpy's object dtype, as for the object array it stands for."""

    __slots__ = ("blob", "ends", "shape")
    dtype: Final = np.dtype(object)

    def __init__(self, shape: tuple[int, ...], ends: np.ndarray[Any, Any], blob: bytes) -> None:
        self.shape, self.ends, self.blob = shape, ends, blob

    @classmethod
    def checked(
        cls, shape: object, ends: bytes | memoryview, blob: bytes, max_elements: int, max_bytes: int
    ) -> PackedBytes:
        """The tensor, if ``shape`` (non-negative ints, product at most ``max_elements``) matches
        the offsets (8 bytes each), the offsets never go backwards and the last is ``blob``'s
        length, and ``blob`` holds at most ``max_bytes``: all checked before anything is made."""
        if not isinstance(shape, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise SandboxError("bytes tensor: shape must be non-negative integers")
        count = 0 if 0 in shape else 1
        for dim in shape if count else ():
            if count > max_elements // dim:  # bounded before the product grows
                raise SandboxError(f"bytes tensor: more than {max_elements} elements")
            count *= dim
        if count > max_elements:
            raise SandboxError(f"bytes tensor: more than {max_elements} elements")
        if not isinstance(blob, bytes) or len(blob) > max_bytes:
            raise SandboxError(f"bytes tensor: elements exceed {max_bytes} bytes")
        if len(ends) != count * _END.itemsize:
            raise SandboxError("bytes tensor: offsets do not match the shape")
        table = np.frombuffer(ends, dtype=_END)
        if count and (bool((table[1:] < table[:-1]).any()) or int(table[-1]) != len(blob)):
            raise SandboxError("bytes tensor: offsets go backwards or do not end at the blob's end")
        if not count and blob:
            raise SandboxError("bytes tensor: bytes after the last element")
        return cls(shape, table, blob)

    @classmethod
    def pack(cls, name: str, array: np.ndarray[Any, Any]) -> PackedBytes:
        """An object (or ``S``/``U``) array's elements packed (a step per element: in a codec or a
        job, or for a small array)."""
        ends, blob = _encode_bytes(name, array)
        return cls(tuple(array.shape), ends, blob)

    @property
    def size(self) -> int:
        return int(self.ends.shape[0])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Its frame region: the offsets and the blob."""
        return int(self.ends.nbytes) + len(self.blob)

    def items(self) -> list[bytes]:
        """The elements, row major (a step per element)."""
        bounds = self.ends.tolist()
        blob = self.blob
        return [blob[start:end] for start, end in zip([0, *bounds][: len(bounds)], bounds, strict=True)]

    def array(self) -> np.ndarray[Any, Any]:
        """The numpy object array of ``bytes`` it stands for (a step per element)."""
        out = np.empty(self.size, dtype=object)
        out[:] = self.items()
        return out.reshape(self.shape)

    def __reduce__(self) -> tuple[Any, ...]:
        # to and from a codec process: two buffers, checked again by the receiver (``checked``)
        return (_unpickled, (self.shape, self.ends.tobytes(), self.blob))


def _unpickled(shape: tuple[int, ...], ends: bytes, blob: bytes) -> PackedBytes:
    return PackedBytes(shape, np.frombuffer(ends, dtype=_END), blob)


#: what crosses the channel as one tensor
Tensor = np.ndarray[Any, Any] | PackedBytes


@dataclass(frozen=True)
class TensorCaps:
    max_tensors: int
    max_rank: int
    #: bytes one tensor could describe, zero dimensions counted as one (the frame cap): bounds
    #: every shape before any arithmetic, so ``[0, 10**4000]`` is refused, not an overflow
    max_bytes: int = 1 << 62


def printable(text: str, limit: int = 4000) -> str:
    """``text`` from a job made safe to print: at most ``limit`` characters, and every control,
    format (bidi), separator and unassigned character escaped (``\\x1b``), so no terminal
    sequence survives; ordinary text is left as it is."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return text if text.isprintable() else repr(text)[1:-1]  # repr escapes exactly what is not printable


def _element_count(name: str, shape: object, itemsize: int, caps: TensorCaps) -> int:
    """Elements of ``shape``, checked one dimension at a time against ``caps.max_bytes``."""
    if not isinstance(shape, list):
        raise SandboxError(f"channel: tensor {name!r} shape must be a list of non-negative integers")
    if len(shape) > caps.max_rank:
        raise SandboxError(f"channel: tensor {name!r} has rank {len(shape)}, the cap is {caps.max_rank}")
    bound = caps.max_bytes // itemsize
    count = 1
    span = 1  # the product with zero dimensions counted as one: what numpy checks for overflow
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise SandboxError(f"channel: tensor {name!r} shape must be a list of non-negative integers")
        if dim > bound or span * max(dim, 1) > bound:
            raise SandboxError(
                f"channel: tensor {name!r} shape {printable(str(shape), 200)} spans more than "
                f"the cap of {caps.max_bytes} bytes"
            )
        span *= max(dim, 1)
        count *= dim
    return count


def _type_ok(kind: str, value: object) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "str?":
        return value is None or isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "tensors":
        return isinstance(value, list)
    raise AssertionError(f"unknown schema kind {kind}")


def check_header(header: Mapping[str, object], expected: Sequence[str]) -> str:
    """Check ``header`` against the schema of its type; the type must be one of ``expected``."""
    kind = header.get("type")
    if not isinstance(kind, str) or kind not in expected:
        raise SandboxError(f"channel: message type {kind!r} is not one of {', '.join(expected)}")
    schema = SCHEMAS[kind]
    keys = set(header) - {"type"}
    if keys != set(schema):
        raise SandboxError(
            f"channel: {kind} message has fields {sorted(keys)}, expected exactly {sorted(schema)}"
        )
    for name, field_kind in schema.items():
        if not _type_ok(field_kind, header[name]):
            raise SandboxError(
                f"channel: {kind}.{name} must be {field_kind}, got {type(header[name]).__name__}"
            )
    return kind


def _numpy_dtype(name: str) -> np.dtype[Any]:
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as exc:  # pragma: no cover - ml_dtypes ships with the numpy/torch extras
            raise SandboxError("channel: a bfloat16 tensor needs the ml_dtypes package") from exc
        bf16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
        return bf16
    return np.dtype(DTYPES[name])


def _wire_name(dtype: np.dtype[Any]) -> str:
    if dtype.name == "bfloat16":
        return "bfloat16"
    for name, code in DTYPES.items():
        if name != "bfloat16" and np.dtype(code) == dtype.newbyteorder("<") and dtype.kind != "O":
            return name
    raise SandboxError(f"channel: dtype {dtype} cannot cross the channel (allowed: {', '.join(DTYPES)})")


def decode_tensors(
    specs: object, payload: memoryview, caps: TensorCaps, packed: bool = False
) -> dict[str, Any]:
    """Build arrays (views over ``payload``) from a checked tensor table; with ``packed``, byte-string
    tensors stay :class:`PackedBytes` (offsets and blob, checked, no step per element)."""
    if not isinstance(specs, list):
        raise SandboxError(f"channel: tensor table must be a list, got {type(specs).__name__}")
    if len(specs) > caps.max_tensors:
        raise SandboxError(
            f"channel: {len(specs)} tensors in one frame exceeds the cap of {caps.max_tensors}"
        )
    result: dict[str, Any] = {}
    position = 0
    #: bytes the decoded byte-string tensors of this frame hold as Python objects (not ``packed``)
    held = 0
    for index, spec in enumerate(specs):
        if not isinstance(spec, dict) or set(spec) != {"name", "dtype", "shape", "offset", "nbytes"}:
            raise SandboxError(
                f"channel: tensor {index} must have exactly name, dtype, shape, offset, nbytes"
            )
        name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
        offset, nbytes = spec["offset"], spec["nbytes"]
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
            raise SandboxError(f"channel: tensor {index} name must be a string of 1..{_MAX_NAME} characters")
        if not name.isprintable():
            raise SandboxError(
                f"channel: tensor {index} name {printable(name)} holds control or invisible characters"
            )
        if name in result:
            raise SandboxError(f"channel: tensor name {name!r} appears twice")
        if not isinstance(dtype, str) or (dtype not in DTYPES and dtype != BYTES_DTYPE):
            raise SandboxError(
                f"channel: tensor {name!r} dtype {printable(str(dtype), 40)!r} is not one of "
                f"{', '.join(DTYPES)}, {BYTES_DTYPE}"
            )
        for value, label in ((offset, "offset"), (nbytes, "nbytes")):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SandboxError(f"channel: tensor {name!r} {label} must be a non-negative integer")
        assert isinstance(offset, int) and isinstance(nbytes, int)
        if dtype != BYTES_DTYPE:
            np_dtype = _numpy_dtype(dtype)
            count = _element_count(name, shape, np_dtype.itemsize, caps)
            expected = count * np_dtype.itemsize
            if nbytes != expected:
                raise SandboxError(
                    f"channel: tensor {name!r} has nbytes {nbytes}, shape and dtype need {expected}"
                )
        if offset != position:
            raise SandboxError(
                f"channel: tensor {name!r} starts at {offset}, expected {position} (contiguous)"
            )
        if offset + nbytes > payload.nbytes:
            raise SandboxError(
                f"channel: tensor {name!r} ends at {offset + nbytes}, payload has {payload.nbytes}"
            )
        if dtype == BYTES_DTYPE:
            region = payload[offset : offset + nbytes]
            if packed:
                count = _element_count(name, shape, _END.itemsize, caps)
                table = count * _END.itemsize
                if table > region.nbytes:
                    raise SandboxError(
                        f"channel: bytes tensor {name!r} has a region too short for its offsets"
                    )
                try:
                    result[name] = PackedBytes.checked(
                        tuple(shape),
                        region[:table],
                        bytes(region[table:]),
                        count,
                        region.nbytes,
                    )
                except SandboxError as exc:
                    raise SandboxError(f"channel: tensor {name!r}: {exc}") from None
            else:
                result[name], held = _decode_bytes(name, shape, region, caps, held)
            position = offset + nbytes
            continue
        array = np.frombuffer(payload, dtype=np_dtype, count=count, offset=offset)
        result[name] = array.reshape(tuple(shape))
        position = offset + nbytes
    if position != payload.nbytes:
        raise SandboxError(f"channel: tensors cover {position} bytes, payload has {payload.nbytes}")
    return result


def _decode_bytes(
    name: str, shape: object, region: memoryview, caps: TensorCaps, held: int
) -> tuple[np.ndarray[Any, Any], int]:
    """A ``bytes`` tensor from its region (ends table + blob), every end checked before any slice,
    and the bytes the frame's decoded byte strings hold with it (``held`` before it).

    An element is a Python object of its own: eight bytes on the wire (an empty one) became about
    a hundred on the host, so a reply under the frame cap could make the host hold ten times
    the cap. Every element is charged :data:`HOST_BYTES_PER_ELEMENT`, every blob byte two,
    against the frame cap (``caps.max_bytes``) before any object is made."""
    count = _element_count(name, shape, _END.itemsize, caps)
    table = count * _END.itemsize
    if table > region.nbytes:
        raise SandboxError(
            f"channel: bytes tensor {name!r} of {count} elements needs {table} bytes of offsets, "
            f"its region has {region.nbytes}"
        )
    held += count * HOST_BYTES_PER_ELEMENT + 2 * (region.nbytes - table)
    if held > caps.max_bytes:
        raise SandboxError(
            f"channel: bytes tensor {name!r} of {count} elements would hold {held} bytes of Python "
            f"objects on the host ({HOST_BYTES_PER_ELEMENT} an element, 2 a byte), above the cap of "
            f"{caps.max_bytes}"
        )
    ends = np.frombuffer(region, dtype=_END, count=count)
    blob = region[table:]
    if count and bool((ends[1:] < ends[:-1]).any()):
        raise SandboxError(f"channel: bytes tensor {name!r} has element offsets that go backwards (overlap)")
    last = int(ends[-1]) if count else 0
    if last != blob.nbytes:
        raise SandboxError(
            f"channel: bytes tensor {name!r} elements end at {last}, its blob has {blob.nbytes} bytes"
        )
    data = bytes(blob)
    bounds = ends.tolist()
    array = np.empty(count, dtype=object)
    array[:] = [data[start:end] for start, end in zip([0, *bounds][: len(bounds)], bounds, strict=True)]
    assert isinstance(shape, list)  # checked by _element_count
    return array.reshape(tuple(shape)), held


def _encode_bytes(name: str, given: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], bytes]:
    """Ends table and blob of a text or byte-string array (elements: ``bytes`` or ``str`` as UTF-8)."""
    items: list[bytes] = []
    for item in given.reshape(-1).tolist():
        if isinstance(item, bytes):
            items.append(item)
        elif isinstance(item, str):
            try:
                items.append(item.encode("utf-8"))
            except UnicodeEncodeError:
                raise SandboxError(f"channel: tensor {name!r} holds text that is not valid Unicode") from None
        else:
            raise SandboxError(
                f"channel: tensor {name!r} holds a {type(item).__name__}, which cannot cross the channel "
                "(object arrays may hold only bytes or str)"
            )
    ends = np.cumsum([len(b) for b in items], dtype=_END) if items else np.zeros(0, dtype=_END)
    return ends.astype(_END, copy=False), b"".join(items)


def encode_tensors(
    arrays: Sequence[tuple[str, Tensor]],
) -> tuple[list[object], list[memoryview]]:
    """Tensor table and zero-copy buffers for :func:`~._frames.send_frame`."""
    specs: list[object] = []
    buffers: list[memoryview] = []
    position = 0
    for name, given in arrays:
        if isinstance(given, PackedBytes):  # already offsets + blob: framed as they are
            buffers += [memoryview(given.ends.view(np.uint8)), memoryview(given.blob)]  # type: ignore[arg-type]
            specs.append(
                {"name": name, "dtype": BYTES_DTYPE, "shape": list(given.shape), "offset": position,
                 "nbytes": given.nbytes}
            )  # fmt: skip
            position += given.nbytes
            continue
        if not isinstance(given, np.ndarray):
            raise SandboxError(f"channel: value {name!r} is {type(given).__name__}, not a numpy array")
        if given.dtype.kind in "OSU":
            ends, blob = _encode_bytes(name, given)
            size = ends.nbytes + len(blob)
            buffers += [memoryview(ends.view(np.uint8)), memoryview(blob)]  # type: ignore[arg-type]
            specs.append(
                {
                    "name": name,
                    "dtype": BYTES_DTYPE,
                    "shape": list(given.shape),
                    "offset": position,
                    "nbytes": size,
                }
            )
            position += size
            continue
        wire = _wire_name(given.dtype)
        if given.dtype.byteorder == ">":
            given = given.astype(given.dtype.newbyteorder("<"))  # noqa: PLW2901
        value: np.ndarray[Any, Any] = np.ascontiguousarray(given).reshape(given.shape)  # keeps 0-d shapes
        buffers.append(memoryview(value.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
        specs.append(
            {
                "name": name,
                "dtype": wire,
                "shape": list(value.shape),
                "offset": position,
                "nbytes": value.nbytes,
            }
        )
        position += value.nbytes
    return specs, buffers
