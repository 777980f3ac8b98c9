"""Admission compares an ONNX model's own inputs with the config's declared ``inputs``
(src/airlock/gateway/_signature.py): read with airlock's protobuf reader from real ONNX files built
in code, the real scan first; a mismatch refuses the model with a reason naming the input.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto, helper

from airlock.gateway._admission import admit
from airlock.gateway._config import load_config
from airlock.gateway._signature import ModelInput, onnx_inputs
from tests.gateway import _models
from tests.gateway.conftest import write_config


def _strings(path: Path) -> Path:
    """y = x ‖ "!" for a string tensor x [N], and a float input ``w`` fed by an initializer."""
    graph = helper.make_graph(
        [helper.make_node("StringConcat", ["x", "s"], ["y"])],
        "strings",
        [
            helper.make_tensor_value_info("x", TensorProto.STRING, [None]),
            helper.make_tensor_value_info("s", TensorProto.STRING, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [None])],
        [helper.make_tensor("s", TensorProto.STRING, [1], [b"!"])],  # type: ignore[list-item]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path


def test_graph_inputs_are_read_without_the_onnx_package(tmp_path: Path) -> None:
    assert onnx_inputs(_strings(tmp_path / "s.onnx")) == [ModelInput("x", "BYTES", (-1,))]
    assert onnx_inputs(_models.affine(tmp_path / "a.onnx")) == [ModelInput("x", "FP32", (-1, 4))]
    assert onnx_inputs(_models.slow(tmp_path / "slow.onnx", steps=1)) == [
        ModelInput("x", "FP32", (1, 1)),
        ModelInput("shape", "INT64", (2,)),
    ]


def _admit(tmp_path: Path, inputs: str, model: str = "s.onnx") -> tuple[str, str]:
    _strings(tmp_path / "s.onnx")
    _models.affine(tmp_path / "a.onnx")
    extra = f'[models.m]\npath = "{model}"\nruntime = "onnx"\ntenants = ["t"]\ninputs = {inputs}\n'
    config = load_config(write_config(tmp_path, extra))
    record, _ = admit(config.models[0], tmp_path / "staging")
    return record.decision, record.reason


@pytest.mark.parametrize(
    ("inputs", "model", "reason"),
    [
        ('[{name = "x", datatype = "BYTES", shape = [-1]}]', "s.onnx", None),
        ('[{name = "x", datatype = "BYTES", shape = [3]}]', "s.onnx", None),  # fixes a free dimension
        ('[{name = "x", datatype = "FP32", shape = [-1, 4]}]', "a.onnx", None),
        (
            # an input an initializer feeds is optional: not part of the signature
            '[{name = "x", datatype = "BYTES", shape = [-1]}, {name = "s", datatype = "BYTES", shape = [1]}]',
            "s.onnx",
            "declared inputs do not match the model: config declares inputs ['s', 'x'], the model takes ['x']",
        ),
        (
            '[{name = "x", datatype = "FP32", shape = [-1]}]',
            "s.onnx",
            "declared inputs do not match the model: input 'x' is declared FP32, the model takes BYTES",
        ),
        (
            '[{name = "x", datatype = "BYTES", shape = [-1, 4]}]',
            "a.onnx",
            "declared inputs do not match the model: input 'x' is declared BYTES, the model takes FP32",
        ),
        (
            '[{name = "x", datatype = "FP32", shape = [-1, 5]}]',
            "a.onnx",
            "declared inputs do not match the model: input 'x' is declared with shape [-1, 5], the model takes [-1, 4]",
        ),
        (
            '[{name = "x", datatype = "FP32", shape = [4]}]',
            "a.onnx",
            "declared inputs do not match the model: input 'x' is declared with shape [4], the model takes [-1, 4]",
        ),
        (
            '[{name = "text", datatype = "BYTES", shape = [-1]}]',
            "s.onnx",
            "declared inputs do not match the model: config declares inputs ['text'], the model takes ['x']",
        ),
    ],
)
def test_declared_inputs_against_the_model(
    tmp_path: Path, inputs: str, model: str, reason: str | None
) -> None:
    decision, why = _admit(tmp_path, inputs, model)
    if reason is None:
        assert decision == "admitted", why
    else:
        assert (decision, why) == ("refused", reason)
