"""A verified scan covers exactly the verified names: what appears after the check is an error.

``airlock scan --lock/--signature/--expect`` (and ``scan(path, verified=verify(path, ...))``) verify
first, then walk the folder again to scan it. A file added between the two walks (or a verified file
replaced by a folder or a link) was never hashed, yet it used to be scanned from disk like any other
file and the report still said the files were verified: a CLEAN verdict for bytes nobody checked.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from airlock._scan.api import scan
from airlock.integrity import hash, verify
from airlock.integrity._lock import render_lock
from tests.integrity.integrity_helpers import build_model

RULE = "integrity.changed"
#: a harmless pickle: the integer 1
PICKLE = pickle.dumps(1, protocol=4)


def _verified_model(tmp_path: Path, **options: object):  # type: ignore[no-untyped-def]
    model = build_model(tmp_path / "model", {"config.json": b'{"model_type": "gpt2"}'})
    lock = tmp_path / "model.lock"
    lock.write_text(render_lock(hash(model)))
    return model, verify(model, lock=lock, **options)  # type: ignore[arg-type]


def _rules(report) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    root = report.root
    return {os.path.relpath(f.path, root): sorted(i.rule for i in f.findings) for f in report.files}


def test_the_pickle_fixture_loads_with_the_real_loader(tmp_path: Path) -> None:
    (tmp_path / "extra.pkl").write_bytes(PICKLE)
    code = "import pickle,sys; print(pickle.load(open(sys.argv[1], 'rb')))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "extra.pkl")], check=True, capture_output=True, timeout=60
    )
    assert out.stdout.strip() == b"1"


def test_unchanged_verified_folder_is_clean(tmp_path: Path) -> None:
    model, verified = _verified_model(tmp_path)
    report = scan(model, verified=verified)
    assert report.verdict.value == "CLEAN"
    assert _rules(report) == {"config.json": ["hf.analysed"]}


def _add_file(model: Path) -> str:
    (model / "extra.pkl").write_bytes(PICKLE)
    return "extra.pkl"


def _add_nested_file(model: Path) -> str:
    (model / "sub").mkdir()
    (model / "sub" / "added.pkl").write_bytes(PICKLE)
    return "sub/added.pkl"


def _file_becomes_folder(model: Path) -> str:
    # a verified name now holds a folder whose file the walk meets instead
    (model / "config.json").unlink()
    (model / "config.json").mkdir()
    (model / "config.json" / "inner.pkl").write_bytes(PICKLE)
    return "config.json/inner.pkl"


def _add_link(model: Path) -> str:
    # a link inside the folder (to verified bytes) gives the loader a name that was never verified
    (model / "tokenizer.json").symlink_to("config.json")
    return "tokenizer.json"


@pytest.mark.parametrize("change", [_add_file, _add_nested_file, _file_becomes_folder, _add_link])
def test_a_name_added_after_verification_is_an_error(tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    model, verified = _verified_model(tmp_path)
    added = change(model)
    report = scan(model, verified=verified)
    assert report.verdict.value == "ERROR"
    rules = _rules(report)
    assert rules[added] == [RULE]
    # only the added name is blamed (and the verified name it took the place of: gone)
    gone = added.split("/")[0] if change is _file_becomes_folder else None
    assert all(RULE not in found for name, found in rules.items() if name not in (added, gone))
    messages = {
        os.path.relpath(f.path, report.root): f.findings[0].message
        for f in report.files
        if f.findings and f.findings[0].rule == RULE
    }
    assert messages[added].startswith("not in the verified manifest")
    if gone is not None:
        assert rules[gone] == [RULE]
        assert messages[gone].startswith("missing after verification")


def test_unsafe_allow_extra_still_scans_extra_files(tmp_path: Path) -> None:
    model, verified = _verified_model(tmp_path, unsafe_allow_extra=True)
    _add_file(model)
    report = scan(model, verified=verified)
    assert RULE not in _rules(report)["extra.pkl"]


def test_unsafe_ignore_covers_the_ignored_path(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model", {"config.json": b'{"model_type": "gpt2"}', "cache/x.pkl": PICKLE})
    lock = tmp_path / "model.lock"
    lock.write_text(render_lock(hash(model, exclude=["cache"])))
    verified = verify(model, lock=lock, unsafe_ignore=["cache"])
    report = scan(model, verified=verified)
    assert RULE not in _rules(report)["cache/x.pkl"]
    assert RULE not in _rules(report)["config.json"]
