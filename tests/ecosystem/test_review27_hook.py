"""Outside review 27: the pre-commit hook passes airlock every staged file the scanner itself calls
a model file name (``MODEL_SUFFIXES``). Its ``files:`` pattern was a list of its own that lacked 17
of them (``.ptl``, ``.torchscript``, ``.nemo``, ``.tflite``, ``.zst`` ...): a malicious pickle staged
as ``model.ptl`` -- MALICIOUS for ``airlock scan`` -- was never passed to it, and the commit went in."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from airlock._cli import main
from airlock._formats.registry import MODEL_SUFFIXES
from tests.fixtures.picklegen import call_global, program

ROOT = Path(__file__).resolve().parents[2]


def _files_pattern() -> re.Pattern[str]:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    (hook,) = [h for h in hooks if h["id"] == "airlock-scan"]
    # pre-commit matches `files` with re.search on the path relative to the repository
    return re.compile(hook["files"])


@pytest.mark.parametrize("suffix", sorted(MODEL_SUFFIXES))
def test_the_hook_passes_every_model_file_name_to_the_scanner(suffix: str) -> None:
    pattern = _files_pattern()
    for name in (f"model{suffix}", f"sub/dir/MODEL{suffix.upper()}", f"a.txt{suffix}"):
        assert pattern.search(name), name
    assert not pattern.search(f"model{suffix}.txt")  # near miss: another last suffix
    assert not pattern.search(f"model{suffix}x")  # near miss: a longer suffix


def test_a_model_file_the_hook_missed_is_malicious_for_the_scanner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    staged = tmp_path / "model.ptl"
    staged.write_bytes(program(call_global("os", "system", f"touch {tmp_path / 'marker'}")))
    assert main(["scan", "--quiet", str(staged)]) == 1
    capsys.readouterr()
    assert _files_pattern().search("model.ptl")


def test_plain_files_are_still_not_passed() -> None:
    pattern = _files_pattern()
    for name in ("README.md", "setup.py", "notes.txt", "data.csv", "config.json"):
        assert not pattern.search(name), name


def _hook_entry() -> list[str]:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    (hook,) = [h for h in hooks if h["id"] == "airlock-scan"]
    assert hook["pass_filenames"] is True and not hook.get("args")
    return shlex.split(hook["entry"])  # pre-commit: entry, args, then the staged file names


@pytest.mark.parametrize("name", ["--output=evil.pkl", "--policy=evil.pkl", "-q.pkl", "-x.pkl"])
def test_a_staged_file_named_like_an_option_is_scanned_as_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """pre-commit appends the staged names to the entry as they are; git lists ``--output=evil.pkl``
    before ``model.pt``, so without ``--`` it was an option: the malicious file itself was never
    scanned, the report went to ``evil.pkl`` and the commit passed (exit 0)."""
    monkeypatch.chdir(tmp_path)
    Path(name).write_bytes(program(call_global("os", "system", f"touch {tmp_path / 'marker'}")))
    Path("model.pt").write_bytes(program(b"}"))  # clean
    command = _hook_entry()
    assert command[:2] == ["airlock", "scan"]
    assert _files_pattern().search(name)
    assert main([*command[1:], *sorted([name, "model.pt"])]) == 1
    assert f"MALICIOUS  {name} [pickle]" in capsys.readouterr().out.splitlines()
    assert not Path("evil.pkl").exists()  # no report written over a file of the repository
