"""verify against digests and lock files: strict, itemised, and every loosening is explicit."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from airlock.errors import FormatError, IntegrityError, LimitError, UsageError
from airlock.integrity import HashLimits, TrustMode, hash, verify
from airlock.integrity._lock import render_lock
from tests.integrity.integrity_helpers import MODEL_FILES, flip_byte


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _lock(path: Path, files: dict[str, object]) -> Path:
    path.write_text(json.dumps({"format": "airlock.lock/v1", "files": files}))
    return path


@pytest.fixture
def lock(model: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model.lock"
    out.write_text(render_lock(hash(model)))
    return out


def test_clean_model_verifies_against_its_lock(model: Path, lock: Path) -> None:
    verified = verify(model, lock=lock)
    assert verified.mode is TrustMode.LOCK
    assert next(e.path for e in verified.manifest.files) == "config.json"
    assert verified.unsafe == ()


def test_every_problem_is_listed(model: Path, lock: Path) -> None:
    flip_byte(model / "model.safetensors", 10)
    (model / "evil.py").write_text("print('hi')\n")
    (model / "tokenizer" / "vocab.txt").unlink()
    (model / "weights" / "layer.0.bin").rename(model / "weights" / "layer.1.bin")
    with pytest.raises(IntegrityError) as info:
        verify(model, lock=lock)
    message = str(info.value)
    assert message.startswith("integrity check failed for model (5 problems):")
    assert "\n  extra: evil.py (not in lock file model.lock)" in message
    assert "\n  missing: tokenizer/vocab.txt" in message
    assert "\n  extra: weights/layer.1.bin" in message
    assert "\n  missing: weights/layer.0.bin" in message
    good = _sha(MODEL_FILES["model.safetensors"])
    assert f"\n  hash mismatch: model.safetensors expected sha256:{good} got sha256:" in message


def test_size_from_lock_is_checked(model: Path, tmp_path: Path) -> None:
    data = MODEL_FILES["config.json"]
    lock = _lock(
        tmp_path / "l.json", {"config.json": {"digest": f"sha256:{_sha(data)}", "size": len(data) + 1}}
    )
    with pytest.raises(
        IntegrityError, match=rf"size mismatch: config.json expected {len(data) + 1} bytes got {len(data)}"
    ):
        verify(model / "config.json", lock=lock)


def test_symlink_pointing_outside_fails_verification(model: Path, lock: Path) -> None:
    (model / "tokenizer" / "vocab.txt").unlink()
    (model / "tokenizer" / "vocab.txt").symlink_to("/etc/hostname")
    with pytest.raises(IntegrityError, match=r"symlink: tokenizer/vocab.txt -> /etc/hostname"):
        verify(model, lock=lock)


def test_unsafe_options_loosen_only_what_they_name(
    model: Path, lock: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (model / "README.md").write_text("extra")
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: x")
    verified = verify(model, lock=lock, unsafe_ignore=[".git"], unsafe_allow_extra=True)
    assert verified.unsafe == ("unsafe-ignore: .git", "unsafe-allow-extra")
    assert "integrity check weakened by unsafe-allow-extra" in caplog.text
    flip_byte(model / "config.json")
    with pytest.raises(IntegrityError, match=r"hash mismatch: config.json"):
        verify(model, lock=lock, unsafe_ignore=[".git"], unsafe_allow_extra=True)


def test_sha256sum_text_lock_and_manifest_json_are_accepted(model: Path, tmp_path: Path) -> None:
    text = tmp_path / "SHA256SUMS"
    text.write_text(hash(model).to_text())
    assert verify(model, lock=text).mode is TrustMode.LOCK
    manifest = tmp_path / "manifest.json"
    small = HashLimits(min_shard_size=1024)
    manifest.write_text(hash(model, shard_size=1024, limits=small).to_json())
    verify(model, lock=manifest, limits=small)
    flip_byte(model / "weights" / "layer.0.bin", 5000)
    with pytest.raises(IntegrityError, match=r"hash mismatch: weights/layer.0.bin bytes 4096..5120 expected"):
        verify(model, lock=manifest, limits=small)


def test_single_file_against_a_folder_lock_and_an_expected_digest(model: Path, tmp_path: Path) -> None:
    data = MODEL_FILES["config.json"]
    lock = _lock(
        tmp_path / "l.json", {"config.json": f"sha256:{_sha(data)}", "other.bin": f"sha256:{'0' * 64}"}
    )
    assert verify(model / "config.json", lock=lock).manifest.files[0].digest == _sha(data)
    assert verify(model / "config.json", expect=f"sha256:{_sha(data).upper()}").mode is TrustMode.DIGEST
    with pytest.raises(
        IntegrityError,
        match=rf"hash mismatch: config.json expected sha256:{'0' * 64} got sha256:{_sha(data)}",
    ):
        verify(model / "config.json", expect=f"sha256:{'0' * 64}")
    with pytest.raises(IntegrityError, match=r"missing: vocab.txt is not in lock file l.json"):
        verify(model / "tokenizer" / "vocab.txt", lock=lock)


def test_expected_digest_of_a_folder_is_a_usage_error(model: Path) -> None:
    with pytest.raises(UsageError, match=r"an expected digest checks one file"):
        verify(model, expect=f"sha256:{'0' * 64}")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"format": "airlock.lock/v1", "files": {"../x": "sha256:' + "0" * 64 + '"}}',
            r"not a canonical relative",
        ),
        (
            '{"format": "airlock.lock/v1", "files": {"/etc/x": "sha256:' + "0" * 64 + '"}}',
            r"not a canonical relative",
        ),
        ('{"format": "airlock.lock/v1", "files": {"a": "sha256:abc"}}', r"must be 64 hex digits, got 'abc'"),
        (
            '{"format": "airlock.lock/v1", "files": {"a": "md5:' + "0" * 32 + '"}}',
            r"unknown digest algorithm 'md5'",
        ),
        ('{"format": "airlock.lock/v1", "files": {"a": "' + "0" * 64 + '"}}', r"has no algorithm prefix"),
        ('{"format": "airlock.lock/v1", "files": {"a": "x", "a": "y"}}', r"duplicate JSON key 'a'"),
        ('{"format": "other"}', r"format expected 'airlock.lock/v1'"),
        ('{"format": "airlock.lock/v1", "files": {"a": NaN}}', r"JSON constant NaN is not allowed"),
        ('{"format": ' + "[" * 100_000 + "]" * 100_000 + "}", r"not valid JSON"),
        ("not a checksum line", r"line 1: expected 'HEX  path'"),
        (f"{'0' * 64}  a\n{'1' * 128}  b\n", r"every digest must use one algorithm"),
        (
            '{"format": "airlock.lock/v1", "files": {"a": {"digest": "sha256:'
            + "0" * 64
            + '", "size": -1}}}',
            r"size must be a non-negative integer",
        ),
    ],
    ids=lambda value: str(value)[:30],
)
def test_bad_lock_files_are_format_errors(model: Path, tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.lock"
    bad.write_text(content)
    with pytest.raises(FormatError, match=message):
        verify(model, lock=bad)


def test_oversized_lock_file_is_refused_before_reading(model: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.lock"
    with open(big, "wb") as fh:
        fh.truncate(10_000)
    with pytest.raises(LimitError, match=r"lock file size limit: .* is 10000 bytes, limit 4096"):
        verify(model, lock=big, limits=HashLimits(max_document_bytes=4096))


def test_exactly_one_trust_source(model: Path, lock: Path) -> None:
    with pytest.raises(UsageError, match=r"exactly one of .*got none"):
        verify(model)
    with pytest.raises(UsageError, match=r"exactly one of .*\['expect', 'lock'\]"):
        verify(model, lock=lock, expect=f"sha256:{'0' * 64}")
    with pytest.raises(UsageError, match=r"only apply to --signature"):
        verify(model, lock=lock, key=lock)


def test_open_returns_the_verified_bytes_and_refuses_a_swapped_file(model: Path, lock: Path) -> None:
    verified = verify(model, lock=lock)
    with verified.open("config.json") as fh:
        assert fh.read() == MODEL_FILES["config.json"]
    target = model / "config.json"
    target.unlink()
    target.write_bytes(MODEL_FILES["config.json"])  # same bytes, but not the file that was hashed
    with pytest.raises(IntegrityError, match=r"changed after verification: config.json"):
        verified.open("config.json")
    with pytest.raises(UsageError, match=r"not a file of the verified manifest"):
        verified.open("nope")
    os.utime(model / "model.safetensors", ns=(1, 1))
    with pytest.raises(IntegrityError, match=r"changed after verification: model.safetensors"):
        verified.open("model.safetensors")
