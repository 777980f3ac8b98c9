"""Weights and code distributed independently: pickle weights are converted at admission.

A model configured with a trusted ``definition`` file and pickle weights is admitted by
verify -> scan -> convert to safetensors; the sandboxed worker then builds the module from the
definition and loads only the safetensors, so no unpickler runs anywhere. Its answers over HTTP
equal the same module's in-process output.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from airlock._cli import main
from airlock.errors import UsageError
from airlock.gateway import Gateway, create_key, load_config, open_store
from tests.gateway import _models
from tests.gateway.conftest import Running, write_config

DEFINITION = """
import torch

def build_model():
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
"""

MODEL = """
[models.tiny]
path = "pytorch_model.bin"
definition = "model_def.py"
tenants = ["acme"]
inputs = [{ name = "x", datatype = "FP32", shape = [-1, 4] }]
"""


def _reference() -> torch.nn.Module:
    namespace: dict[str, object] = {}
    exec(compile(DEFINITION, "<definition>", "exec"), namespace)  # the test's own trusted code  # noqa: S102
    module = namespace["build_model"]()  # type: ignore[operator]
    assert isinstance(module, torch.nn.Module)
    torch.manual_seed(0)
    for parameter in module.parameters():
        torch.nn.init.uniform_(parameter, -1, 1)
    return module


def _setup(folder: Path, weights: bytes | None = None) -> tuple[Path, str, torch.nn.Module]:
    module = _reference()
    (folder / "model_def.py").write_text(DEFINITION)
    if weights is None:
        torch.save(module.state_dict(), folder / "pytorch_model.bin")
    else:
        (folder / "pytorch_model.bin").write_bytes(weights)
    path = write_config(folder, MODEL)
    store = open_store(load_config(path))
    store.add_tenant("acme", None)
    token = create_key(store, "acme")[1]
    store.close()
    return path, token, module


def test_pickle_weights_are_converted_and_served(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, token, module = _setup(tmp_path)
    assert main(["serve", "--config", str(path), "--admit-only"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["decision"] == "admitted"
    assert "pickle weights converted to safetensors" in record["reason"]
    converted = list((tmp_path / "state.db.models").glob("*.safetensors"))
    assert len(converted) == 1
    running = Running(Gateway(load_config(path)))
    try:
        url = f"http://127.0.0.1:{running.gateway.port}/v2/models/tiny/infer"
        x = np.array([[0.5, -1.0, 2.0, 0.25]], dtype=np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}]}
        answer = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert answer.status_code == 200, answer.text
        got = np.array(answer.json()["outputs"][0]["data"], dtype=np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy().ravel()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    finally:
        running.stop()


def test_malicious_pickle_weights_are_refused_before_conversion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    weights = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    path, _token, _module = _setup(tmp_path, weights)
    assert main(["serve", "--config", str(path), "--admit-only"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["decision"] == "refused" and record["verdict"] == "MALICIOUS"
    assert not list((tmp_path / "state.db.models").glob("*.safetensors"))
    assert not marker.exists()


def test_definition_needs_the_definition_runtime(tmp_path: Path) -> None:
    _models.affine(tmp_path / "affine.onnx")
    path = write_config(
        tmp_path,
        '[models.m]\npath = "affine.onnx"\nruntime = "onnx"\ndefinition = "d.py"\ntenants = ["acme"]\n',
    )
    with pytest.raises(UsageError, match="definition needs runtime 'definition'"):
        load_config(path)
