"""The hash / sign / verify commands: exit codes 0 verified, 1 integrity failure, 2 error or usage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import airlock.integrity
from airlock._cli import main
from tests.integrity.integrity_helpers import MODEL_FILES, flip_byte, write_key_pair


def test_public_api_is_pinned() -> None:
    assert airlock.integrity.__all__ == [
        "LOCK_FORMAT", "MANIFEST_FORMAT", "Algorithm", "FileEntry", "HashLimits", "HashParams", "Manifest",
        "Method", "ShardDigest", "TrustMode", "Verified", "hash", "sign", "verify",
    ]  # fmt: skip


def test_hash_lock_then_verify_round_trip(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / "model.lock"
    assert main(["hash", str(model), "--format", "lock", "-o", str(lock)]) == 0
    doc = json.loads(lock.read_text())
    assert (
        doc["files"]["config.json"]["digest"]
        == "sha256:" + hashlib.sha256(MODEL_FILES["config.json"]).hexdigest()
    )
    assert main(["verify", str(model), "--lock", str(lock)]) == 0
    assert "verified: model (5 files" in capsys.readouterr().out
    flip_byte(model / "config.json")
    assert main(["verify", str(model), "--lock", str(lock), "--format", "json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["verified"] is False
    assert report["problems"][0].startswith("hash mismatch: config.json expected sha256:")
    assert "FAILED: integrity check failed for model (1 problem)" in captured.err


def test_hash_json_and_refusing_symlinks(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash", str(model), "--format", "json", "--shard-size", "1048576"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["shard_size"] == 1048576
    (model / "link").symlink_to("/etc/hostname")
    assert main(["hash", str(model)]) == 1
    assert "symlink: link -> /etc/hostname" in capsys.readouterr().err
    assert main(["hash", str(model), "--allow-symlinks"]) == 0


def test_sign_and_verify_with_key(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    priv, pub = write_key_pair(tmp_path, "k")
    sig = tmp_path / "m.sig"
    assert main(["sign", str(model), "--key", str(priv), "-o", str(sig)]) == 0
    assert "signed 5 files of model" in capsys.readouterr().out
    assert main(["verify", str(model), "--signature", str(sig), "--key", str(pub), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "key" and report["unsafe"] == []
    (model / "extra.txt").write_text("x")
    assert main(["verify", str(model), "--signature", str(sig), "--key", str(pub)]) == 1
    assert (
        main(["verify", str(model), "--signature", str(sig), "--key", str(pub), "--unsafe-allow-extra"]) == 0
    )
    captured = capsys.readouterr()
    assert "WARNING: --unsafe-allow-extra weakens the integrity check" in captured.err
    assert "UNSAFE option in force: unsafe-allow-extra" in captured.out


def test_usage_and_format_errors_exit_2(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(model)]) == 2
    assert "exactly one of an expected digest, a lock file or a signature" in capsys.readouterr().err
    bad = tmp_path / "bad.sig"
    bad.write_text("{}")
    _, pub = write_key_pair(tmp_path, "k")
    assert main(["verify", str(model), "--signature", str(bad), "--key", str(pub)]) == 2
    assert "media type expected" in capsys.readouterr().err
    assert main(["verify", str(model / "config.json"), "--expect", "sha256:zz"]) == 2
    assert main(["hash", str(tmp_path / "missing")]) == 2
