"""KServe v2 JSON tensors <-> numpy arrays, checked strictly before anything reaches a worker.

Every problem is a :class:`TensorError` whose message names the tensor and the check (it only
ever describes the caller's own request, so it is safe to send back).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError
from airlock.gateway._config import DATATYPES, TensorSpec

__all__ = ["TensorError", "encode_outputs", "parse_infer_request"]

_MAX_INPUTS: Final = 64
_MAX_RANK: Final = 32
_MAX_NAME: Final = 256
#: numpy kinds accepted for each family of declared datatype
_KINDS: Final = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}


class TensorError(ValueError):
    """A request body that is not a well-formed inference request; its message goes back as a 400."""


def _parse_json(body: bytes) -> dict[str, object]:
    try:
        value = parse_json_strict(body, "request body")
    except FormatError as exc:
        raise TensorError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise TensorError("request body must be a JSON object")
    return value


def _tensor(index: int, item: object) -> tuple[str, np.ndarray[Any, Any], str]:
    if not isinstance(item, dict):
        raise TensorError(f"inputs[{index}] must be an object")
    unknown = set(item) - {"name", "shape", "datatype", "data", "parameters"}
    if unknown:
        raise TensorError(f"inputs[{index}] has unknown field(s) {sorted(unknown)}")
    name, shape, datatype, data = item.get("name"), item.get("shape"), item.get("datatype"), item.get("data")
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        raise TensorError(f"inputs[{index}].name must be a string of 1..{_MAX_NAME} characters")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise TensorError(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise TensorError(f"input {name!r}: shape must be a list of non-negative integers")
    if len(shape) > _MAX_RANK:
        raise TensorError(f"input {name!r}: rank {len(shape)} exceeds {_MAX_RANK}")
    if not isinstance(data, list):
        raise TensorError(f"input {name!r}: data must be a JSON array")
    dtype = np.dtype(DATATYPES[datatype])
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise TensorError(f"input {name!r}: data is ragged or not numeric") from exc
    if raw.size and raw.dtype.kind not in _KINDS[dtype.kind]:
        raise TensorError(
            f"input {name!r}: data holds {raw.dtype.kind!r}-kind values, datatype {datatype} needs numbers of that kind"
        )
    expected = math.prod(shape)
    if raw.size != expected:
        raise TensorError(f"input {name!r}: data has {raw.size} elements, shape {shape} needs {expected}")
    if raw.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if int(raw.min()) < info.min or int(raw.max()) > info.max:
            raise TensorError(f"input {name!r}: a value is out of range for {datatype}")
    with np.errstate(over="ignore"):  # overflow is reported just below
        array = raw.astype(dtype).reshape(shape)
    if (
        dtype.kind == "f"
        and array.size
        and not bool(np.isfinite(array).all())
        and bool(np.isfinite(raw).all())
    ):
        raise TensorError(f"input {name!r}: a value overflows {datatype}")
    return name, array, datatype


def _matches(spec: TensorSpec, datatype: str, shape: tuple[int, ...]) -> bool:
    return (
        spec.datatype == datatype
        and len(spec.shape) == len(shape)
        and all(want in (-1, got) for want, got in zip(spec.shape, shape, strict=True))
    )


def parse_infer_request(
    body: bytes, declared: Sequence[TensorSpec]
) -> tuple[str | None, dict[str, np.ndarray[Any, Any]]]:
    """The request id (if the caller gave one) and the input arrays, checked against ``declared``."""
    request = _parse_json(body)
    unknown = set(request) - {"id", "inputs", "outputs", "parameters"}
    if unknown:
        raise TensorError(f"request has unknown field(s) {sorted(unknown)}")
    request_id = request.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 128):
        raise TensorError("id must be a string of at most 128 characters")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise TensorError("inputs must be a non-empty array")
    if len(inputs) > _MAX_INPUTS:
        raise TensorError(f"{len(inputs)} inputs exceed the limit of {_MAX_INPUTS}")
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    types: dict[str, str] = {}
    for index, item in enumerate(inputs):
        name, array, datatype = _tensor(index, item)
        if name in arrays:
            raise TensorError(f"input {name!r} appears twice")
        arrays[name], types[name] = array, datatype
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
    return request_id, arrays


_FROM_NUMPY: Final[Mapping[str, str]] = {np.dtype(code).str: name for name, code in DATATYPES.items()}


class OutputError(ValueError):
    """A worker returned something that cannot be sent back as KServe JSON."""


def encode_outputs(outputs: Mapping[str, np.ndarray[Any, Any]]) -> list[dict[str, object]]:
    result: list[dict[str, object]] = []
    for name, array in outputs.items():
        datatype = _FROM_NUMPY.get(
            array.dtype.newbyteorder("<").str if array.dtype.byteorder == ">" else array.dtype.str
        )
        if datatype is None:
            raise OutputError(f"output dtype {array.dtype} has no KServe datatype")
        flat = array.reshape(-1)
        if array.dtype.kind == "f" and flat.size and not bool(np.isfinite(flat).all()):
            data: list[object] = [float(v) if math.isfinite(v) else None for v in flat.tolist()]
        else:
            data = flat.tolist()
        result.append({"name": name, "datatype": datatype, "shape": list(array.shape), "data": data})
    return result
