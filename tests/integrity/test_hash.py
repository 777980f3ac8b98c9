"""airlock.integrity.hash: manifests are complete, canonical, deterministic, and refuse what they must."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from airlock.errors import IntegrityError, LimitError, UsageError
from airlock.integrity import Algorithm, HashLimits, Method, hash
from tests.integrity.integrity_helpers import MODEL_FILES


def test_manifest_lists_every_file_sorted_with_size_and_sha256(model: Path) -> None:
    manifest = hash(model)
    assert [e.path for e in manifest.files] == [
        "config.json",
        "model.safetensors",
        "tokenizer/merges.txt",
        "tokenizer/vocab.txt",
        "weights/layer.0.bin",
    ]
    for entry in manifest.files:
        data = MODEL_FILES[entry.path]
        assert entry.size == len(data)
        assert entry.digest == hashlib.sha256(data).hexdigest()
    assert manifest.params.algorithm is Algorithm.SHA256 and manifest.params.method is Method.FILES
    assert manifest.name == "model"


def test_order_is_by_path_components_as_oms_signers_order_resources(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_bytes(b"1")
    (tmp_path / "a.b").write_bytes(b"2")
    (tmp_path / "a-c").write_bytes(b"3")
    # '-' (0x2d) < '.' (0x2e) < '/' (0x2f): string order would put a/b last, component order first.
    assert [e.path for e in hash(tmp_path).files] == ["a/b", "a-c", "a.b"]


def test_root_digest_is_sha256_of_raw_resource_digests(model: Path) -> None:
    manifest = hash(model)
    raw = b"".join(bytes.fromhex(e.digest or "") for e in manifest.files)
    assert manifest.root_digest == hashlib.sha256(raw).hexdigest()


def test_json_manifest_records_parameters_and_is_deterministic(model: Path) -> None:
    first = hash(model, exclude=["tokenizer"]).to_json()
    assert first == hash(model, exclude=["tokenizer/"]).to_json()
    doc = json.loads(first)
    assert doc["format"] == "airlock.manifest/v1"
    assert doc["parameters"] == {
        "algorithm": "sha256",
        "method": "files",
        "shard_size": None,
        "allow_symlinks": False,
        "excluded": ["tokenizer"],
    }
    assert [f["path"] for f in doc["files"]] == ["config.json", "model.safetensors", "weights/layer.0.bin"]


def test_text_output_matches_sha256sum_lines(model: Path) -> None:
    lines = hash(model).to_text().splitlines()
    assert lines[0] == f"{hashlib.sha256(MODEL_FILES['config.json']).hexdigest()}  config.json"


def test_shards_cover_each_file_in_order_and_match_slices(model: Path) -> None:
    manifest = hash(model, shard_size=1000, limits=HashLimits(min_shard_size=1000))
    entry = next(e for e in manifest.files if e.path == "model.safetensors")
    data = MODEL_FILES["model.safetensors"]
    assert [(s.start, s.end) for s in entry.shards] == [(0, 1000), (1000, 2000), (2000, 3000), (3000, 3100)]
    for shard in entry.shards:
        assert shard.digest == hashlib.sha256(data[shard.start : shard.end]).hexdigest()
    names = [r.name for r in manifest.resources()]
    assert "model.safetensors:3000:3100" in names


def test_single_file_is_one_entry_named_dot(model: Path) -> None:
    manifest = hash(model / "config.json")
    assert [(e.path, e.digest) for e in manifest.files] == [
        (".", hashlib.sha256(MODEL_FILES["config.json"]).hexdigest())
    ]
    assert manifest.to_text().endswith("  config.json\n")


@pytest.mark.parametrize(
    ("algorithm", "reference"),
    [
        ("blake2b", lambda b: hashlib.blake2b(b).hexdigest()),
        ("sha256", lambda b: hashlib.sha256(b).hexdigest()),
    ],
)
def test_other_algorithms(model: Path, algorithm: str, reference: object) -> None:
    manifest = hash(model, algorithm=algorithm)
    assert callable(reference)
    assert all(e.digest == reference(MODEL_FILES[e.path]) for e in manifest.files)


def test_blake3_matches_the_reference_implementation(model: Path) -> None:
    blake3 = pytest.importorskip("blake3")  # part of the integrity extra, installed by `.[dev]`
    manifest = hash(model, algorithm="blake3", limits=HashLimits(workers=1))
    assert all(e.digest == blake3.blake3(MODEL_FILES[e.path]).hexdigest() for e in manifest.files)


def test_symlink_is_refused_with_its_target(model: Path) -> None:
    (model / "evil").symlink_to("/etc/passwd")
    with pytest.raises(IntegrityError, match=r"symlink: evil -> /etc/passwd"):
        hash(model)


def test_symlink_to_file_followed_only_when_allowed(model: Path) -> None:
    (model / "alias.json").symlink_to("config.json")
    manifest = hash(model, allow_symlinks=True)
    alias = next(e for e in manifest.files if e.path == "alias.json")
    assert alias.digest == hashlib.sha256(MODEL_FILES["config.json"]).hexdigest()
    assert manifest.params.allow_symlinks


def test_symlink_to_directory_is_refused_even_when_allowed(model: Path) -> None:
    (model / "loop").symlink_to(model)
    with pytest.raises(IntegrityError, match=r"symlink to a non-regular file: loop"):
        hash(model, allow_symlinks=True)


def test_fifo_is_refused_without_blocking(model: Path) -> None:
    os.mkfifo(model / "pipe")
    with pytest.raises(IntegrityError, match=r"special file \(fifo\): pipe"):
        hash(model)


def test_file_count_limit(model: Path) -> None:
    with pytest.raises(LimitError, match=r"file count limit: more than 3 files"):
        hash(model, limits=HashLimits(max_files=3))


def test_depth_limit(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d"] * 6)
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x")
    with pytest.raises(LimitError, match=r"directory depth limit"):
        hash(tmp_path, limits=HashLimits(max_depth=3))


def test_bad_parameters_are_usage_errors(model: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown digest algorithm 'md5'"):
        hash(model, algorithm="md5")
    with pytest.raises(UsageError, match=r"shard size must be a positive integer"):
        hash(model, shard_size=0)
    with pytest.raises(UsageError, match=r"excluded path must be a relative POSIX path"):
        hash(model, exclude=["../x"])
    with pytest.raises(UsageError, match=r"chunk_size must be within"):
        HashLimits(chunk_size=10)
    with pytest.raises(UsageError, match=r"path does not exist"):
        hash(model / "nope")


def test_parallel_and_serial_agree_on_many_files(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"f{i:02d}.bin").write_bytes(os.urandom(i * 997))
    serial = hash(tmp_path, limits=HashLimits(workers=1, chunk_size=4096))
    parallel = hash(tmp_path, limits=HashLimits(workers=4, chunk_size=4096))
    assert serial == parallel
    assert serial.files[7].digest == hashlib.sha256((tmp_path / "f07.bin").read_bytes()).hexdigest()


def test_file_swapped_between_walk_and_hash_is_detected(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airlock.integrity import _manifest
    from airlock.integrity._digest import hash_ranges as real

    def swap_then_hash(items, algorithm, limits):  # type: ignore[no-untyped-def]
        target = model / "config.json"
        target.unlink()
        target.write_bytes(b"swapped in after the walk")
        return real(items, algorithm, limits)

    monkeypatch.setattr(_manifest, "hash_ranges", swap_then_hash)
    with pytest.raises(IntegrityError, match=r"file changed while hashing: config.json"):
        hash(model)
