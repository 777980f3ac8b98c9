"""``airlock run`` / ``airlock doctor`` end to end, and fail-closed behaviour when a layer is missing."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from airlock._cli import main
from airlock.errors import SandboxError
from airlock.sandbox import SandboxLevel, SandboxPolicy, _layers, doctor
from tests.sandbox._payloads import exec_checkpoint


def test_doctor_reports_every_layer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = {layer["name"] for layer in report["layers"]}
    assert names == {"namespaces", "unprivileged-uid", "seccomp-launch", "seccomp-job", "landlock", "rlimits",
                     "cgroups", "wall-clock"}  # fmt: skip
    assert report["ok"] is True


def test_missing_required_layer_fails_closed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_layers, "bwrap_path", lambda: None)
    report = doctor()
    assert not report.ok and report.missing == ("namespaces",)
    torch.save({"w": torch.ones(1)}, tmp_path / "w.pt")
    from airlock.sandbox import load_state_dict

    with pytest.raises(SandboxError, match=r"needs layer\(s\) namespaces that are not active here"):
        load_state_dict(tmp_path / "w.pt")


def test_unsafe_weaker_sandbox_runs_loudly_and_keeps_the_job_filter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_layers, "bwrap_path", lambda: None)
    from airlock.sandbox import load_state_dict

    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    policy = SandboxPolicy(unsafe_weaker_sandbox=True)
    assert np.array_equal(load_state_dict(tmp_path / "w.pt", policy=policy)["w"], np.ones(2, np.float32))
    assert "WEAKER sandbox" in capsys.readouterr().err
    model = exec_checkpoint(tmp_path / "exec.pt", "import os\nos.execv('/bin/sh', ['sh', '-c', 'true'])")
    with pytest.raises(SandboxError, match=r"Operation not permitted"):
        load_state_dict(
            model, policy=policy, unsafe_skip_scan=True
        )  # the sandbox, not the scan, is under test


def test_strict_level_names_its_extra_layers() -> None:
    report = doctor(SandboxPolicy(level=SandboxLevel.STRICT))
    required = {layer.name for layer in report.layers if layer.required}
    assert {"landlock", "cgroups"} <= required


def test_run_cli_load_only_and_inference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    module = torch.nn.Linear(2, 2)
    torch.save(module, tmp_path / "m.pt")
    assert main(["run", str(tmp_path / "m.pt"), "--load-only"]) == 0
    out = capsys.readouterr().out
    assert "weight\tfloat32\t[2, 2]" in out
    (tmp_path / "in.json").write_text(json.dumps({"x": [[1.0, 2.0]]}))
    assert (
        main(
            [
                "run",
                str(tmp_path / "m.pt"),
                "--input",
                str(tmp_path / "in.json"),
                "--output",
                str(tmp_path / "out.json"),
            ]
        )
        == 0
    )
    got = np.asarray(json.loads((tmp_path / "out.json").read_text())["output"])
    expected = module(torch.tensor([[1.0, 2.0]])).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_run_cli_refuses_malicious_by_scan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = exec_checkpoint(tmp_path / "evil.pt", "import os\nos.system('true')")
    assert main(["run", str(model), "--load-only"]) == 2
    assert "scan gate" in capsys.readouterr().err


def test_run_cli_skip_scan_still_sandboxed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    model = exec_checkpoint(tmp_path / "evil.pt", f"import os\nassert os.system('touch {marker}') == 0")
    assert main(["run", str(model), "--load-only", "--unsafe-skip-scan"]) == 2
    err = capsys.readouterr().err
    assert "--unsafe-skip-scan" in err and "sandboxed load failed: AssertionError" in err
    assert not marker.exists()


# --- what `airlock run --output` writes: every name, dtype and value came from the job ------------

#: the job answers the inference with a tensors frame whose names, dtypes and bytes it chose
_ANSWER = """
S.sendall(LOADED)
specs, body, at = [], b'', 0
for name, dtype, shape, data in OUT:
    specs.append({'name': name, 'dtype': dtype, 'shape': shape, 'offset': at, 'nbytes': len(data)})
    body += data
    at += len(data)
S.sendall(tensors_frame(specs, body))
time.sleep(30)
"""


def _float32(*values: float) -> bytes:
    return np.array(values, dtype="<f4").tobytes()


_BIG = 16 << 20  # run_cmd.MAX_JSON_OUTPUT (checked below)


@pytest.mark.parametrize(
    ("suffix", "out", "message"),
    [
        (".json", [("c", "complex64", [1], np.zeros(1, "<c8").tobytes())], "'c' is complex64, which JSON"),
        (".json", [("a", "float32", [1], _float32(1)), ("n", "float32", [2], _float32(1, np.nan))],
         "'n' holds NaN or infinity"),
        (".json", [("i", "float64", [1], np.array([np.inf]).tobytes())], "'i' holds NaN or infinity"),
        (".json", [("s", "bytes", [1], struct.pack("<Q", 2) + b"hi")], "'s' is a tensor of byte strings"),
        (".json", [("big", "uint8", [_BIG // 2 + 1], bytes(_BIG // 2 + 1))],
         f"more than {_BIG // 2} elements, more than JSON output may hold"),
        (".safetensors", [("__metadata__", "float32", [1], _float32(1))], "the name safetensors keeps for"),
        (".safetensors", [("c", "complex128", [1], np.zeros(1, "<c16").tobytes())],
         "'c' is complex128, which safetensors cannot hold"),
        (".safetensors", [("s", "bytes", [1], struct.pack("<Q", 2) + b"hi")], "'s' is a tensor of byte strings"),
    ],
)  # fmt: skip
def test_run_cli_refuses_outputs_its_format_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, out: list[object], message: str
) -> None:
    """Outside review 11: a complex or byte-string output crashed `airlock run --output x.json`
    with a TypeError traceback, NaN was written as the invalid JSON token ``NaN``, a model output
    named ``__metadata__`` left a safetensors file that no reader opens (exit 0), and a JSON
    output's size had no bound (``tolist`` of gigabytes). Each is exit 2 with a message, and no
    file is written."""
    from airlock._cli import run_cmd
    from tests.sandbox.test_host_side import hostile

    assert run_cmd.MAX_JSON_OUTPUT == _BIG
    model = hostile(tmp_path / "out.pt", f"OUT = {out!r}\n" + _ANSWER)
    (tmp_path / "in.json").write_text(json.dumps({"x": [1.0]}))
    target = tmp_path / f"out{suffix}"
    argv = ["run", str(model), "--unsafe-skip-scan", "--input", str(tmp_path / "in.json")]
    assert main([*argv, "--output", str(target), "--timeout", "60"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not target.exists()


@pytest.mark.parametrize("slack", [-1, 0, 1])
def test_json_output_size_at_the_cap(tmp_path: Path, slack: int) -> None:
    from airlock._cli.run_cmd import json_outputs
    from airlock.errors import UsageError

    outputs = {"a": np.array([0, 1], dtype=np.int64), "b": np.array([0.5], dtype=np.float32)}
    text = '{"a": [0, 1], "b": [0.5]}'
    if slack >= 0:
        assert json_outputs(tmp_path / "o.json", outputs, len(text) + slack) == text
    else:
        with pytest.raises(UsageError, match=f"take {len(text)} bytes of JSON, above {len(text) - 1}"):
            json_outputs(tmp_path / "o.json", outputs, len(text) - 1)


def test_run_cli_writes_what_its_format_holds(tmp_path: Path) -> None:
    """The near misses pass: finite floats, bfloat16, integers and bools in JSON (strict JSON,
    read back with airlock's own strict parser); complex64 and a name like ``__metadata_`` in
    safetensors."""
    from airlock._strictjson import parse_json_strict
    from tests.sandbox.test_host_side import hostile

    out = [("f", "float32", [2], _float32(1.5, -0.0)), ("b", "bool", [1], b"\x01"),
           ("u", "uint64", [1], struct.pack("<Q", 2**64 - 1)), ("h", "bfloat16", [1], b"\x80\x3f")]  # fmt: skip
    (tmp_path / "in.json").write_text(json.dumps({"x": [1.0]}))
    model = hostile(tmp_path / "ok.pt", f"OUT = {out!r}\n" + _ANSWER)
    argv = ["run", str(model), "--unsafe-skip-scan", "--input", str(tmp_path / "in.json"), "--timeout", "60"]
    assert main([*argv, "--output", str(tmp_path / "o.json")]) == 0
    got = parse_json_strict((tmp_path / "o.json").read_bytes(), "output")
    assert got == {"f": [1.5, -0.0], "b": [True], "u": [2**64 - 1], "h": [1.0]}
    out = [("__metadata_", "float32", [1], _float32(2)), ("c", "complex64", [1], np.ones(1, "<c8").tobytes())]
    model = hostile(tmp_path / "ok2.pt", f"OUT = {out!r}\n" + _ANSWER)
    assert main([*argv[:1], str(model), *argv[2:], "--output", str(tmp_path / "o.safetensors")]) == 0
    from safetensors.numpy import load_file

    loaded = load_file(str(tmp_path / "o.safetensors"))
    assert loaded["__metadata_"].tolist() == [2.0] and loaded["c"].tolist() == [1 + 0j]
