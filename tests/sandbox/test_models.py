"""Ordinary models still work in the sandbox and give the same outputs as in-process inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from airlock.errors import SandboxError
from airlock.sandbox import Sandbox, Worker, load_state_dict

onnx = pytest.importorskip("onnx", reason="the onnx extra is part of airlock[dev]")


def _module() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def _x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)


def test_pickled_module_matches_in_process(warm: Sandbox, tmp_path: Path) -> None:
    module = _module()
    torch.save(module, tmp_path / "module.pt")
    expected = module(torch.from_numpy(_x())).detach().numpy()
    with warm.open(tmp_path / "module.pt") as worker:
        assert worker.info.kind == "module"
        assert "seccomp-job" in worker.info.job_layers
        for _ in range(3):  # repeated inference on one loaded model
            got = worker.infer({"x": _x()})["output"]
            np.testing.assert_allclose(got, expected, rtol=1e-6)
        state = worker.state_dict()
    np.testing.assert_array_equal(state["0.weight"], module.state_dict()["0.weight"].numpy())


def test_torchscript_matches_in_process(warm: Sandbox, tmp_path: Path) -> None:
    scripted = torch.jit.script(_module())
    scripted.save(str(tmp_path / "script.pt"))  # type: ignore[no-untyped-call]
    expected = scripted(torch.from_numpy(_x())).detach().numpy()
    with warm.open(tmp_path / "script.pt") as worker:
        assert worker.info.runtime == "torchscript"
        np.testing.assert_allclose(worker.infer({"x": _x()})["output"], expected, rtol=1e-6)


def _onnx_model(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    weight = rng.standard_normal((4, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return weight, bias


def test_onnx_matches_in_process(tmp_path: Path) -> None:
    weight, bias = _onnx_model(tmp_path / "affine.onnx")
    import onnxruntime  # type: ignore[import-untyped]

    session = onnxruntime.InferenceSession(str(tmp_path / "affine.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(["y"], {"x": _x()})[0]
    with Worker(tmp_path / "affine.onnx") as worker:
        assert worker.info.runtime == "onnx"
        got = worker.infer({"x": _x()})["y"]
        state = worker.state_dict()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got, _x() @ weight + bias, rtol=1e-5)
    np.testing.assert_array_equal(state["w"], weight)


DEFINITION = """
import torch

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 2)

    def forward(self, x):
        return torch.tanh(self.proj(x))

def build_model():
    return Tiny()
"""


def test_definition_file_plus_safetensors_matches_in_process(warm: Sandbox, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    namespace: dict[str, object] = {}
    exec(DEFINITION, namespace)  # noqa: S102 - the test's own trusted source, for the reference
    build = namespace["build_model"]
    assert callable(build)
    model = build()
    save_file(model.state_dict(), str(tmp_path / "weights.safetensors"))
    (tmp_path / "model_def.py").write_text(DEFINITION)
    expected = model(torch.from_numpy(_x())).detach().numpy()
    with warm.open(tmp_path / "weights.safetensors", definition=tmp_path / "model_def.py") as worker:
        np.testing.assert_allclose(worker.infer({"x": _x()})["output"], expected, rtol=1e-6)


def test_checkpoint_tensors_round_trip_every_dtype(tmp_path: Path) -> None:
    tensors: dict[str, torch.Tensor] = {
        "f32": torch.randn(3, 2),
        "bf16": torch.randn(4).to(torch.bfloat16),
        "i64": torch.arange(5),
        "flag": torch.tensor([True, False]),
    }
    torch.save({**tensors, "nested": {"scalar": torch.tensor(7.5)}}, tmp_path / "ckpt.pt")
    state = load_state_dict(tmp_path / "ckpt.pt")
    assert set(state) == {"f32", "bf16", "i64", "flag", "nested.scalar"}
    np.testing.assert_array_equal(state["f32"], tensors["f32"].numpy())
    np.testing.assert_array_equal(state["bf16"].astype(np.float32), tensors["bf16"].float().numpy())
    np.testing.assert_array_equal(state["i64"], np.arange(5))
    assert state["nested.scalar"].shape == ()


def test_infer_on_a_checkpoint_is_a_clear_error(warm: Sandbox, tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "ckpt.pt")
    with (
        warm.open(tmp_path / "ckpt.pt") as worker,
        pytest.raises(SandboxError, match=r"not a callable nn.Module"),
    ):
        worker.infer({"x": _x()})
