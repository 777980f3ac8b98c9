"""Report formats for users' tools: SARIF for code scanning, CycloneDX ML-BOM, HTML, JSON; stdin; links."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from airlock._cli import main
from tests._reports import run_cli, sarif_schema
from tests.fixtures.attacks import ATTACKS
from tests.fixtures.picklegen import call_global, program

ROOT = Path(__file__).resolve().parents[2]


def _malicious(folder: Path, name: str = "os-system") -> Path:
    attack = next(a for a in ATTACKS if a.id == name)
    return attack.build(folder, folder / "pwned")


def _two_calls(folder: Path) -> Path:
    """One file, two dangerous callables (same rule): two results, never one."""
    path = folder / "two.pkl"
    path.write_bytes(program(call_global("os", "system") + b"0" + call_global("subprocess", "Popen")))
    return path


# --- SARIF ----------------------------------------------------------------------------------


def test_sarif_for_code_scanning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "repo" / "models"
    models.mkdir(parents=True)
    _malicious(models)
    _two_calls(models)
    (models / "custom.pkl").write_bytes(program(call_global("mypkg.layers", "MyLayer")))
    monkeypatch.chdir(tmp_path / "repo")
    # An absolute path is scanned, as CI jobs often do: the URIs must still be relative.
    code, out = run_cli(["scan", str(models.resolve()), "--format", "sarif"], capsys)
    assert code == 1
    doc = json.loads(out)
    jsonschema.validate(doc, sarif_schema())
    run = doc["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == (tmp_path / "repo").resolve().as_uri() + "/"
    results = run["results"]
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
    assert uris == {"models/os_system.pkl", "models/two.pkl", "models/custom.pkl"}
    for result in results:
        location = result["locations"][0]["physicalLocation"]["artifactLocation"]
        assert location["uriBaseId"] == "%SRCROOT%"
        assert not location["uri"].startswith("/")
        assert len(result["partialFingerprints"]["airlock/v1"]) == 64
    # Several findings of one rule in one file stay several results with distinct fingerprints.
    in_two = [
        r
        for r in results
        if r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "models/two.pkl"
    ]
    callables = sorted(r["properties"]["callable"] for r in in_two)
    assert callables == ["os.system", "subprocess.Popen"]
    fingerprints = [r["partialFingerprints"]["airlock/v1"] for r in results]
    assert len(set(fingerprints)) == len(fingerprints)
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    danger = rules["pickle.dangerous-global"]
    assert danger["properties"]["security-severity"] == "9.8"
    assert "external/cwe/cwe-502" in danger["properties"]["tags"]
    assert "catalogued callable" in danger["help"]["text"]  # from the rules table of docs/scan.md
    assert danger["help"]["markdown"]
    assert rules["pickle.unknown-global"]["properties"]["security-severity"] == "5.0"
    for result in results:
        assert run["tool"]["driver"]["rules"][result["ruleIndex"]]["id"] == result["ruleId"]


def test_sarif_fingerprints_are_stable_across_locations_of_the_checkout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prints = []
    for name in ("a", "b"):
        repo = tmp_path / name
        (repo / "models").mkdir(parents=True)
        _two_calls(repo / "models")
        monkeypatch.chdir(repo)
        _, out = run_cli(["scan", "models", "--format", "sarif"], capsys)
        prints.append(
            sorted(r["partialFingerprints"]["airlock/v1"] for r in json.loads(out)["runs"][0]["results"])
        )
    assert prints[0] == prints[1]


def test_sarif_outside_the_working_directory_is_relative_to_the_scanned_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "elsewhere"
    models.mkdir()
    _malicious(models)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _, out = run_cli(["scan", str(models), "--format", "sarif"], capsys)
    doc = json.loads(out)
    jsonschema.validate(doc, sarif_schema())
    location = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": "os_system.pkl", "uriBaseId": "ROOT1"}
    assert doc["runs"][0]["originalUriBaseIds"]["ROOT1"]["uri"] == models.as_uri() + "/"


# --- CycloneDX --------------------------------------------------------------------------------


def test_cyclonedx_ml_bom_validates_with_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    bad = _malicious(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    code, out = run_cli(["scan", str(tmp_path), "--format", "cyclonedx"], capsys)
    assert code == 1
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(out) is None
    doc = json.loads(out)
    assert doc["bomFormat"] == "CycloneDX"
    assert doc["specVersion"] == "1.6"
    by_name = {c["name"]: c for c in doc["components"]}
    model = by_name[str(bad)]
    assert model["type"] == "machine-learning-model"
    import hashlib

    assert model["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(bad.read_bytes()).hexdigest()}]
    props = {(p["name"], p["value"]) for p in model["properties"]}
    assert ("airlock:verdict", "MALICIOUS") in props
    assert ("airlock:format", "pickle") in props
    assert any(n == "airlock:finding" and "pickle.dangerous-global os.system" in v for n, v in props)
    skipped = by_name[str(tmp_path / "notes.txt")]
    assert ("airlock:verdict", "SKIPPED") in {(p["name"], p["value"]) for p in skipped["properties"]}
    tools = doc["metadata"]["tools"]["components"]
    assert tools[0]["name"] == "airlock"


# --- HTML ------------------------------------------------------------------------------------


def test_html_report_escapes_everything_from_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "<img src=x onerror=alert(1)>"
    folder.mkdir()
    path = folder / "m.pkl"
    path.write_bytes(program(call_global("os", "system", "<script>alert(2)</script>")))
    code, out = run_cli(["scan", str(folder), "--format", "html"], capsys)
    assert code == 1
    assert out.startswith("<!DOCTYPE html>")
    assert "<script" not in out
    assert "<img" not in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in out
    assert "default-src 'none'" in out  # no script, no remote resource can load
    assert "http://" not in out and "https://" not in out  # self-contained


# --- JSON, stdin, links -------------------------------------------------------------------------


def test_several_roots_are_listed_not_joined(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a, b", tmp_path / "c"
    a.mkdir()
    b.mkdir()
    _malicious(a)
    _malicious(b)
    _, out = run_cli(["scan", str(a), str(b), "--format", "json"], capsys)
    doc = json.loads(out)
    assert doc["roots"] == [str(a), str(b)]
    assert doc["root"] is None
    _, out = run_cli(["scan", str(a), "--format", "json"], capsys)
    assert json.loads(out)["root"] == str(a)


def test_folder_check_files_report_their_size_and_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    _, out = run_cli(["scan", str(tmp_path), "--format", "json"], capsys)
    files = {Path(f["path"]).name: f for f in json.loads(out)["files"]}
    assert files["config.json"]["size"] == config.stat().st_size
    assert files["config.json"]["seconds"] > 0


def _cli(args: list[str], stdin: bytes = b"", cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "airlock", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


def test_scan_reads_standard_input(tmp_path: Path) -> None:
    bad = _malicious(tmp_path).read_bytes()
    proc = _cli(["scan", "-", "--format", "json"], stdin=bad)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["root"] == "-"
    assert [f["path"] for f in doc["files"]] == ["-"]
    assert doc["files"][0]["findings"][0]["callable"] == "os.system"
    clean = _cli(["scan", "-"], stdin=program(b"}"))
    assert clean.returncode == 0, clean.stdout
    empty = _cli(["scan", "-"], stdin=b"")
    assert empty.returncode == 2  # an empty input is an error, never clean


def test_stdin_spool_is_bounded_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from airlock._cli._stdin import spooled_stdin
    from airlock.errors import LimitError

    class _In:
        def __init__(self, data: bytes) -> None:
            self.buffer = io.BytesIO(data)

    monkeypatch.setattr(sys, "stdin", _In(b"x" * 11))
    with pytest.raises(LimitError, match="larger than 10 bytes"), spooled_stdin(10):
        pass
    monkeypatch.setattr(sys, "stdin", _In(b"x" * 10))
    with spooled_stdin(10) as path:
        assert path.read_bytes() == b"x" * 10
        assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    assert not path.parent.exists()


def test_a_link_named_on_the_command_line_is_scanned_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link to a file in the same folder does not 'leave the folder': it is the file load reads."""
    bad = _malicious(tmp_path)
    link = tmp_path / "model.bin"
    link.symlink_to(bad.name)
    code, out = run_cli(["scan", str(link)], capsys)
    assert code == 1
    assert "fs.symlink-outside" not in out
    assert "os.system" in out or "posix.system" in out
    monkey_cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        code, out = run_cli(["scan", "model.bin"], capsys)  # relative, as typed in a shell
    finally:
        os.chdir(monkey_cwd)
    assert code == 1
    assert "fs.symlink-outside" not in out


def test_links_inside_a_scanned_folder_are_still_not_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    bad = _malicious(outside)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").symlink_to(bad)
    code, out = run_cli(["scan", str(folder)], capsys)
    assert code == 3
    assert "fs.symlink-outside" in out


def test_unsafe_allow_symlinks_without_a_trust_source_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _malicious(tmp_path)
    for flag in (["--unsafe-allow-symlinks"], ["--unsafe-allow-extra"], ["--unsafe-ignore", "x"]):
        assert main(["scan", str(tmp_path), *flag]) == 2
        err = capsys.readouterr().err
        assert "usage error" in err
        assert flag[0] in err
