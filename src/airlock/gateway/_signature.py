"""Admission: an ONNX model's own input signature against the config's declared ``inputs``.

The graph inputs (``ModelProto.graph.input``, minus the ones an initializer feeds: those are
optional) are read with airlock's own protobuf reader from the staged, already scanned file — never
with the ``onnx`` package or onnxruntime in the trusted process. A declared input the model lacks,
a model input that is not declared, a datatype that differs (``tensor(string)`` is ``BYTES``,
``tensor(float)`` is ``FP32`` …), a rank that differs, or a fixed dimension that differs from a
fixed declared one refuses the model at start-up, with a message naming the input: otherwise
every request would pass the gateway's checks and fail in the worker.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from airlock._formats import protobuf as pb
from airlock.errors import FormatError
from airlock.gateway._config import TensorSpec

__all__ = ["ModelInput", "check_signature", "onnx_inputs"]

#: TensorProto.DataType -> KServe datatype (onnx.proto); others have none
_ELEM_TYPES: Final = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "BYTES",
    9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64",
}  # fmt: skip
_MAX_INPUTS: Final = 4096


@dataclass(frozen=True)
class ModelInput:
    name: str
    #: the KServe datatype, or a description when there is none (``"elem_type 16"``, ``"not a tensor"``)
    datatype: str
    #: None: no shape recorded; a dimension is its value, or -1 when symbolic or unknown
    shape: tuple[int, ...] | None


def _tensor_type(data: memoryview, field: pb.Field) -> tuple[str, tuple[int, ...] | None]:
    datatype, shape = "not a tensor", None
    for kind in pb.iter_fields(data, field.start, field.end):
        if kind.number != 1 or kind.wire != pb.LEN:  # TypeProto.tensor_type only
            continue
        datatype = "elem_type 0"
        for item in pb.iter_fields(data, kind.start, kind.end):
            if item.number == 1 and item.wire == pb.VARINT:
                datatype = _ELEM_TYPES.get(item.value, f"elem_type {item.value}")
            elif item.number == 2 and item.wire == pb.LEN:
                dims: list[int] = []
                for dim in pb.iter_fields(data, item.start, item.end):
                    if dim.number == 1 and dim.wire == pb.LEN:
                        value = -1
                        for part in pb.iter_fields(data, dim.start, dim.end):
                            if part.number == 1 and part.wire == pb.VARINT and part.value < 2**63:
                                value = part.value
                        dims.append(value)
                shape = tuple(dims)
    return datatype, shape


def _graph_inputs(data: memoryview, graph: pb.Field) -> list[ModelInput]:
    inputs: list[ModelInput] = []
    fed: set[str] = set()
    for field in pb.iter_fields(data, graph.start, graph.end):
        if field.number == 5 and field.wire == pb.LEN:  # initializer: TensorProto.name is field 8
            for part in pb.iter_fields(data, field.start, field.end):
                if part.number == 8:
                    fed.add(pb.text(data, part, "initializer name"))
        elif field.number == 11 and field.wire == pb.LEN:  # input: ValueInfoProto
            if len(inputs) >= _MAX_INPUTS:
                raise FormatError(f"the graph declares more than {_MAX_INPUTS} inputs")
            name, datatype, shape = "", "not a tensor", None
            for part in pb.iter_fields(data, field.start, field.end):
                if part.number == 1:
                    name = pb.text(data, part, "input name")
                elif part.number == 2 and part.wire == pb.LEN:
                    datatype, shape = _tensor_type(data, part)
            inputs.append(ModelInput(name, datatype, shape))
    return [i for i in inputs if i.name not in fed]


def onnx_inputs(path: Path) -> list[ModelInput]:
    """The graph inputs of the ONNX file at ``path`` (FormatError when it cannot be read)."""
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            raise FormatError("empty ONNX file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as data:
            for field in pb.iter_fields(data, 0, len(data)):
                if field.number == 7 and field.wire == pb.LEN:
                    return _graph_inputs(data, field)
    raise FormatError("the ONNX file has no graph")


def _shape_differs(declared: tuple[int, ...], actual: tuple[int, ...] | None) -> bool:
    if actual is None:
        return False
    if len(declared) != len(actual):
        return True
    return any(d != -1 and a not in (-1, d) for d, a in zip(declared, actual, strict=True))


def check_signature(declared: Sequence[TensorSpec], actual: Sequence[ModelInput]) -> str | None:
    """Why ``declared`` does not fit the model's inputs, or None when it does."""
    model = {i.name: i for i in actual}
    names = {s.name for s in declared}
    if names != set(model):
        return f"config declares inputs {sorted(names)}, the model takes {sorted(model)[:64]}"
    for spec in declared:
        got = model[spec.name]
        if got.datatype != spec.datatype:
            return f"input {spec.name!r} is declared {spec.datatype}, the model takes {got.datatype}"
        if _shape_differs(spec.shape, got.shape):
            shown = "?" if got.shape is None else list(got.shape)
            return f"input {spec.name!r} is declared with shape {list(spec.shape)}, the model takes {shown}"
    return None
