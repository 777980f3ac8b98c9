"""GPU lanes in the gateway config: ``[models.X] gpu = N``, at most one lane (one tenant, one model)
per GPU, and the index reaching the lane's sandbox policy. Runs on CPU: no test needs a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.errors import SandboxError, UsageError
from airlock.gateway import Gateway, load_config
from airlock.sandbox import SandboxPolicy
from tests.gateway import _models


def _config(tmp_path: Path, models: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[server]\nport = 0\nadmin_port = 0\nstate = 's.db'\n{models}", encoding="utf-8")
    return path


def _model(name: str, tenants: str, gpu: str | None) -> str:
    return f"[models.{name}]\npath = 'm.onnx'\ntenants = {tenants}\n" + (f"gpu = {gpu}\n" if gpu else "")


def test_one_lane_on_a_gpu_is_accepted(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, _model("chat", "['acme']", "0") + _model("cpu", "['acme']", None)))
    assert [(m.name, m.gpu) for m in config.models] == [("chat", 0), ("cpu", None)]


def test_two_gpus_for_two_tenants_are_accepted(tmp_path: Path) -> None:
    text = _model("chat_a", "['acme']", "0") + _model("chat_g", "['globex']", "1")
    assert [m.gpu for m in load_config(_config(tmp_path, text)).models] == [0, 1]


def test_a_gpu_model_for_two_tenants_is_refused(tmp_path: Path) -> None:
    """One model, two tenants: two lanes, two tenants' processes on one GPU."""
    with pytest.raises(
        UsageError, match=r"models\.chat\.gpu = 0 is for one tenant, but the model names 2 \(acme, globex\)"
    ):
        load_config(_config(tmp_path, _model("chat", "['acme', 'globex']", "0")))


def test_two_tenants_models_on_one_gpu_are_refused(tmp_path: Path) -> None:
    text = _model("chat_a", "['acme']", "0") + _model("chat_g", "['globex']", "0")
    with pytest.raises(
        UsageError,
        match=r"gpu 0 is given to models\.chat_a \(tenant acme\) and to models\.chat_g \(tenant globex\)",
    ):
        load_config(_config(tmp_path, text))


def test_two_models_of_one_tenant_on_one_gpu_are_refused(tmp_path: Path) -> None:
    """Two lanes of one tenant: still two lanes on one GPU (a GPU serves one lane)."""
    text = _model("chat", "['acme']", "3") + _model("embed", "['acme']", "3")
    with pytest.raises(
        UsageError, match=r"gpu 3 is given to models\.chat \(tenant acme\) and to models\.embed"
    ):
        load_config(_config(tmp_path, text))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", r"models\.m\.gpu must be a GPU index from 0 to 253, got -1"),
        ("254", r"models\.m\.gpu must be a GPU index from 0 to 253, got 254"),
        ("true", r"models\.m\.gpu must not be a boolean"),
        ("'0'", r"models\.m\.gpu has the wrong type \(str\)"),
        ("0.0", r"models\.m\.gpu has the wrong type \(float\)"),
    ],
)
def test_gpu_must_be_an_index(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_config(_config(tmp_path, _model("m", "['a']", value)))
    assert load_config(_config(tmp_path, _model("m", "['a']", "253"))).models[0].gpu == 253


def test_the_lane_gets_its_gpu_and_a_missing_gpu_is_a_named_error(tmp_path: Path) -> None:
    """The index reaches the lane's own sandbox policy (other lanes keep the CPU policy), and a
    worker for a GPU the host lacks does not start: the error names the missing node."""
    _models.affine(tmp_path / "m.onnx")
    text = _model("gpu_lane", "['acme']", "253") + _model("cpu_lane", "['acme']", None)
    config = load_config(_config(tmp_path, text))
    base = SandboxPolicy(limits=config.sandbox, unsafe_weaker_sandbox=True)  # any host: layers aside
    gateway = Gateway(config, policy=base)
    gpu_lane = gateway._factory(tmp_path / "m.onnx", config.models[0])
    cpu_lane = gateway._factory(tmp_path / "m.onnx", config.models[1])
    assert gpu_lane._policy == SandboxPolicy(limits=config.sandbox, unsafe_weaker_sandbox=True, gpu=253)
    assert cpu_lane._policy is base
    with pytest.raises(
        SandboxError, match=r"GPU 253 is not usable on this host: device node\(s\) /dev/nvidia253"
    ):
        gpu_lane.start()


def test_a_lane_gpu_comes_from_the_config_only(tmp_path: Path) -> None:
    """A base policy that names a GPU does not put CPU lanes (or another lane) on it."""
    text = _model("gpu_lane", "['acme']", "1") + _model("cpu_lane", "['globex']", None)
    config = load_config(_config(tmp_path, text))
    gateway = Gateway(config, policy=SandboxPolicy(limits=config.sandbox, gpu=5))
    lanes = [gateway._factory(tmp_path / "m.onnx", model) for model in config.models]
    assert [lane._policy.gpu for lane in lanes] == [1, None]
