"""``airlock scan --lock/--expect``: verify first, then scan exactly the verified bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import airlock
from airlock._cli import main
from airlock.integrity import verify
from tests.fixtures.attacks import ATTACKS
from tests.fixtures.picklegen import program


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.pkl").write_bytes(program(b"}" + b"\x8c\x01a" + b"K\x01" + b"s"))
    (folder / "config.json").write_text('{"model_type": "x"}')
    return folder


def _lock(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["hash", str(folder), "--format", "lock"]) == 0
    lock = tmp_path / "model.lock"
    lock.write_text(capsys.readouterr().out)
    return lock


def test_verified_clean_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder(tmp_path)
    lock = _lock(folder, tmp_path, capsys)
    assert main(["scan", str(folder), "--lock", str(lock), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "CLEAN"
    assert doc["integrity"] is not None
    assert "verified against" in doc["integrity"]


def test_tampered_folder_is_refused_before_scanning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path)
    lock = _lock(folder, tmp_path, capsys)
    data = bytearray((folder / "weights.pkl").read_bytes())
    data[3] ^= 1
    (folder / "weights.pkl").write_bytes(bytes(data))
    (folder / "evil.py").write_text("print('hi')")
    assert main(["scan", str(folder), "--lock", str(lock)]) == 1
    err = capsys.readouterr().err
    assert "nothing was scanned" in err
    assert "hash mismatch: weights.pkl" in err
    assert "extra: evil.py" in err


def test_verified_malicious_file_is_still_malicious(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    attack = next(a for a in ATTACKS if a.id == "os-system")
    path = attack.build(tmp_path, tmp_path / "pwned")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["scan", str(path), "--expect", f"sha256:{digest}"]) == 1
    out = capsys.readouterr().out
    assert "integrity: 1 file(s) verified" in out
    assert "os.system" in out
    assert main(["scan", str(path), "--expect", "sha256:" + "0" * 64]) == 1
    assert "hash mismatch" in capsys.readouterr().err


def test_file_changed_after_verification_is_an_error(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    manifest = airlock.integrity.hash(folder)
    lock = tmp_path / "model.lock"
    lock.write_text(manifest.to_json())
    verified = verify(folder, lock=lock)
    (folder / "weights.pkl").write_bytes(program(b"N"))  # swapped after the check
    report = airlock.scan(folder, verified=verified)
    assert report.verdict is airlock.Verdict.ERROR
    assert any(f.rule == "integrity.changed" for f in report.findings())


def test_verification_of_another_path_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    manifest = airlock.integrity.hash(folder)
    lock = tmp_path / "model.lock"
    lock.write_text(manifest.to_json())
    verified = verify(folder, lock=lock)
    with pytest.raises(airlock.UsageError, match="verification is for"):
        airlock.scan(tmp_path, verified=verified)
