"""``airlock run`` / ``airlock doctor`` end to end, and fail-closed behaviour when a layer is missing."""

from __future__ import annotations

import json
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
