"""KServe v2 tensors <-> numpy arrays, checked strictly before anything reaches a worker.

Two encodings of a request: all-JSON (``data`` arrays of numbers), and the KServe v2 binary tensor
extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the
raw little-endian bytes of each input that says ``"parameters": {"binary_data_size": N}``, in order.
Binary inputs become arrays over the body's own buffer (no copy, no JSON numbers). ``BYTES``
tensors (text, byte strings) are object arrays of ``bytes``, parsed and bounded in :mod:`._bytes`.

Every problem is a :class:`TensorError` whose message is a fixed phrase about the caller's own
request: it names a tensor (a name of at most 256 characters, already checked) and the check, never
echoes other caller bytes and never carries an exception's text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError
from airlock.gateway._bytes import (
    BYTES,
    BytesError,
    BytesOutputError,
    bytes_from_binary,
    bytes_from_json,
    bytes_to_binary,
    bytes_to_json,
    tensor_bytes,
)
from airlock.gateway._config import DATATYPES, TensorSpec

__all__ = [
    "InferRequest",
    "OutputError",
    "TensorError",
    "encode_outputs",
    "encode_reply",
    "parse_infer_request",
]

_MAX_INPUTS: Final = 64
_MAX_RANK: Final = 32
_MAX_NAME: Final = 256
#: no dimension, and no product of the non-zero dimensions, may exceed this (numpy's own index
#: type is int64; a shape like [10**30, 0] has no elements but cannot exist as an array)
_MAX_ELEMENTS: Final = 2**40
#: the JSON header of a binary request is a few hundred bytes per tensor
MAX_BINARY_HEADER: Final = 64 * 1024
#: numpy kinds accepted for each family of declared datatype
_KINDS: Final = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}


class TensorError(ValueError):
    """A request body that is not a well-formed inference request; its message goes back as a 400."""


@dataclass(frozen=True)
class InferRequest:
    #: the caller's own id (echoed back), if any
    id: str | None
    #: numpy arrays; a BYTES one an object array (parsed on the loop) or a PackedBytes (in a codec)
    inputs: dict[str, Any]
    #: requested outputs (empty: all) and whether each goes back binary
    outputs: tuple[tuple[str, bool], ...]
    #: binary for every output (request-level ``binary_data_output``)
    binary_output: bool
    #: the inputs' bytes for the byte budget (a BYTES tensor: its elements + 4 each), counted where
    #: the request was parsed (the tenant's codec for a large one), not on the event loop
    nbytes: int


def _parse_json(body: bytes | memoryview, what: str) -> dict[str, object]:
    try:
        value = parse_json_strict(body, what)
    except FormatError:
        # fixed text: the parser's message may quote Python internals (recursion, int digit limits)
        raise TensorError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise TensorError(f"{what} must be a JSON object")
    return value


def _parameters(where: str, value: object, allowed: Mapping[str, type]) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TensorError(f"{where}.parameters must be an object")
    result: dict[str, object] = {}
    for key, item in value.items():
        kind = allowed.get(key)
        if kind is None:
            raise TensorError(
                f"{where}.parameters has an unknown key (allowed: {', '.join(sorted(allowed))})"
            )
        if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
            raise TensorError(f"{where}.parameters.{key} must be a {kind.__name__}")
        result[key] = item
    return result


def _shape(name: str, shape: object) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise TensorError(f"input {name!r}: shape must be a list of non-negative integers")
    if len(shape) > _MAX_RANK:
        raise TensorError(f"input {name!r}: rank exceeds {_MAX_RANK}")
    if math.prod(max(d, 1) for d in shape) > _MAX_ELEMENTS:
        raise TensorError(f"input {name!r}: shape exceeds {_MAX_ELEMENTS} elements")
    return tuple(shape)


def _from_json(name: str, datatype: str, shape: tuple[int, ...], data: object) -> np.ndarray[Any, Any]:
    if not isinstance(data, list):
        raise TensorError(f"input {name!r}: data must be a JSON array")
    dtype = np.dtype(DATATYPES[datatype])
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise TensorError(f"input {name!r}: data is ragged or not numeric") from None
    if raw.size and (raw.dtype.kind == "O" or (dtype.kind in "iu" and raw.dtype.kind == "f")):
        # numpy guessed no exact type: integers beyond 64 bits, or UINT64 values >= 2**63 next to
        # smaller ones (float64), or floats among integers; decided value by value
        raw = _exact(name, datatype, dtype, data)
    if raw.size and raw.dtype.kind not in _KINDS[dtype.kind]:
        raise TensorError(f"input {name!r}: data holds values of the wrong kind for {datatype}")
    expected = math.prod(shape)
    if raw.size != expected:
        raise TensorError(
            f"input {name!r}: data has {raw.size} elements, shape {list(shape)} needs {expected}"
        )
    if raw.size and raw.dtype.kind == "f" and not bool(np.isfinite(raw).all()):
        # NaN/Infinity literals are refused by the parser; a non-finite float here is a literal
        # like 1e400 that overflowed float64
        raise TensorError(f"input {name!r}: a number is out of range for {datatype}")
    if raw.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if int(raw.min()) < info.min or int(raw.max()) > info.max:
            raise TensorError(f"input {name!r}: a value is out of range for {datatype}")
    with np.errstate(over="ignore"):  # overflow is reported just below
        array = raw.astype(dtype).reshape(shape)
    if dtype.kind == "f" and array.size and not bool(np.isfinite(array).all()):
        raise TensorError(f"input {name!r}: a value overflows {datatype}")
    return array


def _exact(name: str, datatype: str, dtype: np.dtype[Any], data: list[Any]) -> np.ndarray[Any, Any]:
    """``data`` as an exact integer array (integer datatypes) or float64 (float datatypes), decided
    element by element; a ragged list, a non-number, a float for an integer type, or a value out
    of range is a TensorError."""
    try:
        values = np.array(data, dtype=object)
    except (ValueError, TypeError):
        raise TensorError(f"input {name!r}: data is ragged or not numeric") from None
    kinds = (int, bool) if dtype.kind in "iu" else (int, bool, float)
    flat = values.reshape(-1).tolist()
    if not all(type(v) in kinds for v in flat):
        if dtype.kind in "iu":
            raise TensorError(
                f"input {name!r}: data holds a value that is not an integer, or out of range for {datatype}"
            )
        raise TensorError(f"input {name!r}: data is ragged or not numeric")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if min(flat) < info.min or max(flat) > info.max:
            raise TensorError(f"input {name!r}: a value is out of range for {datatype}")
        return np.array(flat, dtype=dtype).reshape(values.shape)
    try:
        return np.array([float(v) for v in flat], dtype=np.float64).reshape(values.shape)
    except OverflowError:  # an integer beyond float64
        raise TensorError(f"input {name!r}: a number is out of range for {datatype}") from None


def _from_binary(name: str, datatype: str, shape: tuple[int, ...], chunk: memoryview) -> np.ndarray[Any, Any]:
    dtype = np.dtype(DATATYPES[datatype])
    array = np.frombuffer(chunk, dtype=dtype).reshape(shape)  # a view of the request body
    if dtype.kind == "b" and array.size and int(np.frombuffer(chunk, dtype=np.uint8).max()) > 1:
        raise TensorError(f"input {name!r}: BOOL bytes must be 0 or 1")
    if dtype.kind == "f" and array.size and not bool(np.isfinite(array).all()):
        raise TensorError(f"input {name!r}: NaN and infinite values are not accepted")
    return array


def _matches(spec: TensorSpec, datatype: str, shape: tuple[int, ...]) -> bool:
    return (
        spec.datatype == datatype
        and len(spec.shape) == len(shape)
        and all(want in (-1, got) for want, got in zip(spec.shape, shape, strict=True))
    )


def _outputs(value: object) -> tuple[tuple[str, bool], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_INPUTS:
        raise TensorError(f"outputs must be an array of at most {_MAX_INPUTS} objects")
    result = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"name", "parameters"}:
            raise TensorError(f"outputs[{index}] must be an object with name and parameters")
        name = item.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
            raise TensorError(f"outputs[{index}].name must be a string of 1..{_MAX_NAME} characters")
        params = _parameters(f"outputs[{index}]", item.get("parameters"), {"binary_data": bool})
        result.append((name, bool(params.get("binary_data", False))))
    return tuple(result)


def parse_infer_request(
    body: bytes | memoryview,
    declared: Sequence[TensorSpec],
    header_length: int | None = None,
    max_bytes: int | None = None,
) -> InferRequest:
    """The caller's request checked against ``declared``; ``header_length`` selects the binary form;
    ``max_bytes`` (the request size limit) bounds BYTES elements, each and all together."""
    view = memoryview(body)
    try:
        return _parse(view, declared, header_length, min(len(view), max_bytes or len(view)))
    except BytesError as exc:
        raise TensorError(str(exc)) from None


def _parse(
    view: memoryview, declared: Sequence[TensorSpec], header_length: int | None, limit: int
) -> InferRequest:
    if header_length is None:
        request = _parse_json(view, "request body")
        binary = view[len(view) :]
    else:
        if not 0 < header_length <= min(len(view), MAX_BINARY_HEADER):
            raise TensorError(
                f"Inference-Header-Content-Length must be 1..{MAX_BINARY_HEADER} and within the body"
            )
        request = _parse_json(view[:header_length], "inference header")
        binary = view[header_length:]
    if set(request) - {"id", "inputs", "outputs", "parameters"}:
        raise TensorError("request has unknown fields (allowed: id, inputs, outputs, parameters)")
    request_id = request.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 128):
        raise TensorError("id must be a string of at most 128 characters")
    params = _parameters("request", request.get("parameters"), {"binary_data_output": bool})
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise TensorError("inputs must be a non-empty array")
    if len(inputs) > _MAX_INPUTS:
        raise TensorError(f"more than {_MAX_INPUTS} inputs")
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    types: dict[str, str] = {}
    offset = 0
    for index, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise TensorError(f"inputs[{index}] must be an object")
        if set(item) - {"name", "shape", "datatype", "data", "parameters"}:
            raise TensorError(
                f"inputs[{index}] has unknown fields (allowed: name, shape, datatype, data, parameters)"
            )
        name, datatype = item.get("name"), item.get("datatype")
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
            raise TensorError(f"inputs[{index}].name must be a string of 1..{_MAX_NAME} characters")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise TensorError(f"input {name!r}: datatype is not one of {', '.join(DATATYPES)}")
        if name in arrays:
            raise TensorError(f"input {name!r} appears twice")
        shape = _shape(name, item.get("shape"))
        size = _parameters(f"inputs[{index}]", item.get("parameters"), {"binary_data_size": int}).get(
            "binary_data_size"
        )
        if size is None and datatype == BYTES:
            array = bytes_from_json(name, shape, item.get("data"), limit)
        elif size is None:
            array = _from_json(name, datatype, shape, item.get("data"))
        else:
            assert isinstance(size, int)
            if header_length is None:
                raise TensorError(f"input {name!r}: binary_data_size needs Inference-Header-Content-Length")
            if "data" in item:
                raise TensorError(f"input {name!r}: binary_data_size and data exclude each other")
            if datatype == BYTES:
                if not 0 <= size <= len(binary) - offset:
                    raise TensorError(f"input {name!r}: binary_data_size runs past the body")
                array = bytes_from_binary(name, shape, binary[offset : offset + size], limit)
                offset += size
                arrays[name], types[name] = array, datatype
                continue
            need = math.prod(shape) * np.dtype(DATATYPES[datatype]).itemsize
            if size != need or offset + size > len(binary):
                raise TensorError(
                    f"input {name!r}: binary_data_size must be {need} bytes for {datatype} {list(shape)}, "
                    "within the body"
                )
            array = _from_binary(name, datatype, shape, binary[offset : offset + size])
            offset += size
        arrays[name], types[name] = array, datatype
    if offset != len(binary):
        raise TensorError("the binary section's length differs from the sum of binary_data_size")
    if declared:
        wanted = {spec.name: spec for spec in declared}
        if set(arrays) != set(wanted):
            raise TensorError(f"inputs are {sorted(arrays)}, the model takes {sorted(wanted)}")
        for name, spec in wanted.items():
            if not _matches(spec, types[name], arrays[name].shape):
                raise TensorError(
                    f"input {name!r}: got {types[name]} {list(arrays[name].shape)}, "
                    f"the model takes {spec.datatype} {list(spec.shape)}"
                )
    return InferRequest(
        request_id,
        arrays,
        _outputs(request.get("outputs")),
        bool(params.get("binary_data_output", False)),
        sum(tensor_bytes(a) for a in arrays.values()),
    )


_FROM_NUMPY: Final[Mapping[str, str]] = {np.dtype(code).str: name for name, code in DATATYPES.items()}


class OutputError(ValueError):
    """A worker returned something that cannot be sent back as a KServe tensor."""


def _datatype(array: Any) -> str:
    datatype = _FROM_NUMPY.get(
        array.dtype.newbyteorder("<").str if array.dtype.byteorder == ">" else array.dtype.str
    )
    if datatype is None:
        raise OutputError("an output dtype has no KServe datatype")
    return datatype


def encode_outputs(outputs: Mapping[str, Any]) -> list[dict[str, object]]:
    result: list[dict[str, object]] = []
    for name, array in outputs.items():
        datatype = _datatype(array)
        if datatype == BYTES:
            try:
                data: list[object] = list(bytes_to_json(array))
            except BytesOutputError as exc:
                raise OutputError(str(exc)) from None
        elif array.dtype.kind == "f" and array.size and not bool(np.isfinite(array).all()):
            data = [float(v) if math.isfinite(v) else None for v in array.reshape(-1).tolist()]
        else:
            data = array.reshape(-1).tolist()
        result.append({"name": name, "datatype": datatype, "shape": list(array.shape), "data": data})
    return result


def encode_reply(
    model: str,
    reply_id: str,
    outputs: Mapping[str, Any],
    binary: frozenset[str] = frozenset(),
) -> tuple[list[bytes | memoryview], int | None]:
    """The response body as buffers (sent as they are) and, when any output is binary, the length of
    its JSON header (for ``Inference-Header-Content-Length``)."""
    header: list[dict[str, object]] = []
    chunks: list[bytes | memoryview] = []
    for name, array in outputs.items():
        if name in binary and _datatype(array) == BYTES:
            try:
                blob = bytes_to_binary(array)
            except BytesOutputError as exc:
                raise OutputError(str(exc)) from None
            header.append({"name": name, "datatype": BYTES, "shape": list(array.shape),
                           "parameters": {"binary_data_size": len(blob)}})  # fmt: skip
            chunks.append(blob)
        elif name in binary:
            datatype = _datatype(array)
            little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
            header.append({"name": name, "datatype": datatype, "shape": list(array.shape),
                           "parameters": {"binary_data_size": little.nbytes}})  # fmt: skip
            chunks.append(little.tobytes() if not little.flags.c_contiguous else little.data.cast("B"))
        else:
            header.extend(encode_outputs({name: array}))
    text = json.dumps({"model_name": model, "id": reply_id, "outputs": header}, separators=(",", ":"))
    raw = text.encode("utf-8")
    return [raw, *chunks], (len(raw) if chunks else None)
