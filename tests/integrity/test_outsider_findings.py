"""Regression tests for the integrity findings of issue 18 (shard floor, shard names, verified bytes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from airlock._cli import main
from airlock.errors import FormatError, LimitError
from airlock.integrity import HashLimits, hash, verify
from tests.integrity.integrity_helpers import build_model, write_key_pair

MIB = 1024 * 1024


def _lock_with_shards(path: Path, model: Path, shard_size: int, name: str = "model.safetensors") -> Path:
    data = (model / name).read_bytes()
    doc = {
        "format": "airlock.manifest/v1",
        "name": "model",
        "parameters": {"algorithm": "sha256", "method": "shards", "shard_size": shard_size,
                       "allow_symlinks": False, "excluded": []},
        "files": [{"path": name, "size": len(data), "shards": [
            {"start": 0, "end": len(data), "digest": "sha256:" + hashlib.sha256(data).hexdigest()}]}],
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("shard_size", [1, MIB - 1])
def test_lock_with_a_tiny_shard_size_is_refused_before_hashing(tmp_path: Path, shard_size: int) -> None:
    model = build_model(tmp_path / "model")
    lock = _lock_with_shards(tmp_path / "lock.json", model, shard_size)
    with pytest.raises(LimitError, match=rf"shard size {shard_size} is below the minimum of {MIB} bytes"):
        verify(model, lock=lock, unsafe_allow_extra=True)


def test_shard_size_at_the_floor_is_accepted(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    manifest = hash(model, shard_size=MIB)
    assert manifest.params.shard_size == MIB


@pytest.mark.parametrize("size", ["1", "1048575"])
def test_hash_cli_refuses_a_tiny_shard_size(
    tmp_path: Path, size: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model(tmp_path / "model")
    assert main(["hash", str(model), "--shard-size", size]) == 2
    err = capsys.readouterr().err
    assert "below the minimum" in err and "Traceback" not in err


def test_number_of_shards_is_bounded_before_any_range_is_built(tmp_path: Path) -> None:
    model = tmp_path / "big"
    model.mkdir()
    with open(model / "sparse.bin", "wb") as fh:  # 64 GiB apparent size, no blocks
        fh.truncate(64 * 1024 * MIB)
    limits = HashLimits(max_resources=1000)
    with pytest.raises(LimitError, match=r"makes 65536 shards, more than 1000"):
        hash(model, shard_size=MIB, limits=limits)


# --- shard names in signatures: strict ASCII decimal, one name per shard


def _signed_statement(tmp_path: Path, resources: list[dict[str, Any]], shard_size: int) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from airlock.integrity._oms import PAYLOAD_TYPE, pae, render_bundle

    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model", "digest": {"sha256": root}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "shards", "hash_type": "sha256", "allow_symlinks": False,
                              "shard_size": shard_size},
            "resources": resources,
        },
    }  # fmt: skip
    payload = json.dumps(statement).encode()
    priv, pub = write_key_pair(tmp_path, "k")
    key = serialization.load_pem_private_key(priv.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    sig = tmp_path / "s.sig"
    sig.write_text(render_bundle(payload, signature, key_hint=None, certificates=[]))
    return sig, pub


def _model_one_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = bytes(range(256)) * 40
    model = build_model(tmp_path / "model", {"w.bin": data})
    return model, data


@pytest.mark.parametrize(
    "name",
    [
        "w.bin:00:10240",  # leading zero
        "w.bin:0:010240",
        "w.bin:\u0660:10240",  # ARABIC-INDIC DIGIT ZERO
        "w.bin:0:\uff11\uff10\uff12\uff14\uff10",  # fullwidth digits
        "w.bin:+0:10240",
        "w.bin: 0:10240",
    ],
)
def test_shard_offsets_must_be_plain_ascii_decimal(tmp_path: Path, name: str) -> None:
    model, data = _model_one_file(tmp_path)
    digest = hashlib.sha256(data).hexdigest()
    sig, pub = _signed_statement(tmp_path, [{"name": name, "algorithm": "sha256", "digest": digest}], MIB)
    with pytest.raises(FormatError, match=r"decimal offsets \(ASCII digits, no leading zeros\)"):
        verify(model, signature=sig, key=pub)


def test_plain_shard_name_verifies(tmp_path: Path) -> None:
    model, data = _model_one_file(tmp_path)
    digest = hashlib.sha256(data).hexdigest()
    sig, pub = _signed_statement(
        tmp_path, [{"name": "w.bin:0:10240", "algorithm": "sha256", "digest": digest}], MIB
    )
    verify(model, signature=sig, key=pub)


def test_one_shard_under_two_spellings_is_refused(tmp_path: Path) -> None:
    model, data = _model_one_file(tmp_path)
    digest = hashlib.sha256(data).hexdigest()
    resources = [
        {"name": "w.bin:0:10240", "algorithm": "sha256", "digest": digest},
        {"name": "w.bin:0:4096", "algorithm": "sha256", "digest": hashlib.sha256(data[:4096]).hexdigest()},
    ]
    sig, pub = _signed_statement(tmp_path, resources, MIB)
    with pytest.raises(
        FormatError, match=r"shard w\.bin:0 is listed twice \('w\.bin:0:10240', 'w\.bin:0:4096'\)"
    ):
        verify(model, signature=sig, key=pub)


def test_duplicate_shard_in_a_manifest_lock_is_refused(tmp_path: Path) -> None:
    model, _ = _model_one_file(tmp_path)
    lock = _lock_with_shards(tmp_path / "lock.json", model, MIB, "w.bin")
    doc = json.loads(lock.read_text())
    doc["files"][0]["shards"].append(dict(doc["files"][0]["shards"][0]))
    lock.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"a shard is listed twice"):
        verify(model, lock=lock)


# --- Verified.open hands out exactly the verified bytes


def test_open_refuses_a_write_through_a_shared_mapping_that_leaves_the_times_alone(tmp_path: Path) -> None:
    import mmap
    import os

    from airlock.errors import IntegrityError
    from airlock.integrity._lock import render_lock

    data = bytes(range(256)) * 64
    model = build_model(tmp_path / "model", {"w.bin": data, "config.json": b"{}"})
    fd = os.open(model / "w.bin", os.O_RDWR)
    mapping = mmap.mmap(fd, len(data), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        mapping[100] = data[100]  # the page is now dirty (and its time already updated)
        lock = tmp_path / "model.lock"
        lock.write_text(render_lock(hash(model)))
        verified = verify(model, lock=lock)
        before = os.stat(model / "w.bin")
        mapping[101] = data[101] ^ 0xFF  # a write to the already-dirty page: no fault, no new times
        after = os.stat(model / "w.bin")
        assert (before.st_mtime_ns, before.st_ctime_ns, before.st_size, before.st_ino) == (
            after.st_mtime_ns, after.st_ctime_ns, after.st_size, after.st_ino,
        )  # fmt: skip
        with pytest.raises(IntegrityError, match=r"changed after verification: w\.bin bytes 0\.\.16384"):
            verified.open("w.bin")
        mapping[101] = data[101]  # back to the verified bytes: handed out, as a sealed private copy
        with verified.open("w.bin") as fh:
            assert fh.read() == data
            import fcntl

            seals = fcntl.fcntl(fh.fileno(), fcntl.F_GET_SEALS)
            assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
            with pytest.raises(OSError):
                os.pwrite(fh.fileno(), b"x", 0)
            mapping[101] = data[101] ^ 0xFF  # later writes to the file never reach the copy
            fh.seek(0)
            assert fh.read() == data
    finally:
        mapping.close()
        os.close(fd)


def test_scan_with_lock_reads_the_sealed_copy(tmp_path: Path) -> None:
    import os

    from airlock._scan.api import scan
    from airlock.integrity._lock import render_lock

    model = build_model(tmp_path / "model", {"config.json": b'{"model_type": "gpt2"}'})
    lock = tmp_path / "model.lock"
    lock.write_text(render_lock(hash(model)))
    verified = verify(model, lock=lock)
    with verified.open("config.json") as fh:
        assert os.readlink(f"/proc/self/fd/{fh.fileno()}").startswith("/memfd:airlock-verified")
    report = scan(model, verified=verified)
    assert report.verdict.value == "CLEAN"
