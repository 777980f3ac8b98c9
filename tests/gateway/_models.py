"""Small ONNX models built in code for the gateway tests (they run in the real sandbox)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

AFFINE_W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
AFFINE_B = np.array([1.0, -1.0, 0.5], dtype=np.float32)


def _save(graph: object, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])  # type: ignore[arg-type]
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def affine(path: Path) -> Path:
    """y = x @ W + b for x of shape [N, 4]."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(AFFINE_W, "w"), numpy_helper.from_array(AFFINE_B, "b")],
    )
    return _save(graph, path)


def slow(path: Path, width: int = 1024, steps: int = 120) -> Path:
    """Work chosen by the caller: x [1, 1] is expanded to ``shape`` = [rows, width], then multiplied by a
    [width, width] matrix ``steps`` times. rows = 1 takes milliseconds, rows = width takes seconds."""
    weight = (np.eye(width, dtype=np.float32) * 0.5).astype(np.float32)
    nodes = [helper.make_node("Expand", ["x", "shape"], ["h0"])]
    for i in range(steps):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("ReduceSum", [f"h{steps}"], ["y"], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "slow",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(weight, "w")],
    )
    return _save(graph, path)


def malicious_pickle(path: Path) -> Path:
    """A pickle that would run os.system when loaded (it is only ever scanned here)."""
    path.write_bytes(b"cos\nsystem\n(S'touch /tmp/airlock-gateway-pwned'\ntR.")
    return path
