"""Build ONNX models for the tests with the ``onnx`` package (test-only dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tensor(name: str, size: int = 16) -> TensorProto:
    return numpy_helper.from_array(np.arange(size, dtype=np.float32), name)


def graph(
    nodes: list[onnx.NodeProto], initializers: list[TensorProto] | None = None, name: str = "g"
) -> onnx.GraphProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])
    return helper.make_graph(nodes, name, [x], [y], initializer=initializers or [])


def simple_model(
    extra_nodes: list[onnx.NodeProto] | None = None,
    *,
    domains: tuple[str, ...] = (),
    functions: list[onnx.FunctionProto] | None = None,
) -> onnx.ModelProto:
    """x + w -> relu -> y, with one initializer ``w``; ``domains`` are imported at version 1."""
    nodes = [
        helper.make_node("Add", ["x", "w"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
    ]
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(
        graph(nodes + (extra_nodes or []), [tensor("w")]),
        opset_imports=opsets,
        producer_name="airlock-tests",
        functions=functions or [],
    )


def save_external(
    model: onnx.ModelProto, folder: Path, name: str = "model.onnx", location: str = "weights.bin"
) -> Path:
    """Save ``model`` with every tensor in one external data file next to it."""
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path


def set_location(path: Path, location: str, *, offset: str | None = None, length: str | None = None) -> None:
    """Rewrite every external tensor's location (and optionally offset/length) in ``path``."""
    model = onnx.load_model(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
            elif entry.key == "offset" and offset is not None:
                entry.value = offset
            elif entry.key == "length" and length is not None:
                entry.value = length
    path.write_bytes(model.SerializeToString())


def nested_if(depth: int, innermost: TensorProto) -> onnx.ModelProto:
    """A model whose graph holds ``depth`` levels of If nodes; the innermost branch has ``innermost``."""
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])
    inner = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["y"], name="leaf")], "leaf", [], [y], initializer=[innermost]
    )
    inner.initializer[0].name = "c"
    for level in range(depth):
        node = helper.make_node(
            "If", ["cond"], ["y"], name=f"if{level}", then_branch=inner, else_branch=inner
        )
        inner = helper.make_graph([node], f"level{level}", [], [y])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    top = helper.make_graph(list(inner.node), "top", [cond], [y])
    return helper.make_model(top, opset_imports=[helper.make_opsetid("", 17)])
