"""Integrity comparison item by item: every digest compared on its full value (a value that differs
only in its last character, or is a prefix of the expected one, is a mismatch), sizes, shards,
missing and extra files; and the known answer of a manifest built from real bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from airlock.integrity._compare import Expected, ExpectedFile, compare, integrity_error
from airlock.integrity._manifest import FileEntry, Manifest, ShardDigest
from airlock.integrity._params import Algorithm, HashLimits, HashParams, Method

D = hashlib.sha256(b"weights").hexdigest()


def _last_changed(digest: str) -> str:
    return digest[:-1] + ("0" if digest[-1] != "0" else "1")


def _expected(*files: ExpectedFile, method: Method = Method.FILES) -> Expected:
    return Expected(Algorithm.SHA256, method, None, {f.path: f for f in files}, "lock file m.lock")


def _manifest(*files: FileEntry) -> Manifest:
    return Manifest("m", HashParams(), tuple(files))


def test_identical_is_clean() -> None:
    assert compare(_expected(ExpectedFile("a", 7, D)), _manifest(FileEntry("a", 7, D))) == []


@pytest.mark.parametrize(
    "got",
    [_last_changed(D), D[:-1], D[:32], D + "0", D.upper(), "0" + D[1:]],
    ids=["last-char", "prefix-63", "prefix-32", "longer", "upper", "first-char"],
)
def test_digest_compared_on_the_full_value(got: str) -> None:
    problems = compare(_expected(ExpectedFile("a", 7, D)), _manifest(FileEntry("a", 7, got)))
    assert problems == [f"hash mismatch: a expected sha256:{D} got sha256:{got}"]


@pytest.mark.parametrize("size", [6, 8])
def test_size_at_n_minus_1_and_n_plus_1(size: int) -> None:
    problems = compare(_expected(ExpectedFile("a", 7, D)), _manifest(FileEntry("a", size, D)))
    assert problems == [f"size mismatch: a expected 7 bytes got {size}"]


def test_unknown_size_compares_the_digest_only() -> None:
    assert compare(_expected(ExpectedFile("a", None, D)), _manifest(FileEntry("a", 99, D))) == []


def test_missing_and_extra() -> None:
    problems = compare(
        _expected(ExpectedFile("a", 7, D), ExpectedFile("b", 7, D)),
        _manifest(FileEntry("a", 7, D), FileEntry("c", 1, D)),
    )
    assert problems == ["extra: c (not in lock file m.lock)", "missing: b"]
    extra_allowed = compare(
        _expected(ExpectedFile("a", 7, D)),
        _manifest(FileEntry("a", 7, D), FileEntry("c", 1, D)),
        allow_extra=True,
    )
    assert extra_allowed == []


def test_single_file_entry_is_named_by_the_manifest() -> None:
    problems = compare(_expected(ExpectedFile(".", 7, D)), _manifest(FileEntry(".", 7, _last_changed(D))))
    assert problems == [f"hash mismatch: m expected sha256:{D} got sha256:{_last_changed(D)}"]
    assert compare(_expected(ExpectedFile(".", 7, D)), _manifest()) == ["missing: m"]


def test_shards_compared_each_on_the_full_value() -> None:
    d2 = hashlib.sha256(b"two").hexdigest()
    want = ExpectedFile("a", None, None, (ShardDigest(0, 4, D), ShardDigest(4, 8, d2)))
    ok = FileEntry("a", 8, None, (ShardDigest(0, 4, D), ShardDigest(4, 8, d2)))
    assert compare(_expected(want, method=Method.SHARDS), _manifest(ok)) == []
    bad = FileEntry("a", 8, None, (ShardDigest(0, 4, D), ShardDigest(4, 8, _last_changed(d2))))
    assert compare(_expected(want, method=Method.SHARDS), _manifest(bad)) == [
        f"hash mismatch: a bytes 4..8 expected sha256:{d2} got sha256:{_last_changed(d2)}"
    ]
    cut = FileEntry("a", 7, None, (ShardDigest(0, 4, D), ShardDigest(4, 7, d2)))
    assert compare(_expected(want, method=Method.SHARDS), _manifest(cut)) == [
        "size mismatch: a expected 8 bytes (from its shards) got 7"
    ]


def test_integrity_error_lists_every_problem() -> None:
    error = integrity_error("m", ["missing: a"])
    assert str(error) == "integrity check failed for m (1 problem):\n  missing: a"
    many = integrity_error("m", [f"missing: {i}" for i in range(202)])
    assert many.problems == tuple(f"missing: {i}" for i in range(202))
    assert str(many).endswith("\n  missing: 199\n  ... and 2 more")
    assert "(202 problems)" in str(many)


def test_manifest_known_answer(tmp_path: Path) -> None:
    from airlock.integrity import _hash_api

    (tmp_path / "a.bin").write_bytes(b"weights")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"")
    manifest = _hash_api.hash(tmp_path)
    assert manifest.params == HashParams()
    by_path = {f.path: f for f in manifest.files}
    assert by_path["a.bin"] == FileEntry("a.bin", 7, D)
    assert by_path["sub/b.txt"] == FileEntry("sub/b.txt", 0, hashlib.sha256(b"").hexdigest())
    assert len(manifest.files) == 2
    # below the 1 MiB floor on purpose: a known answer needs shards of a few bytes
    sharded = _hash_api.hash(tmp_path, shard_size=4, limits=HashLimits(min_shard_size=4))
    (a,) = [f for f in sharded.files if f.path == "a.bin"]
    assert a.shards == (
        ShardDigest(0, 4, hashlib.sha256(b"weig").hexdigest()),
        ShardDigest(4, 7, hashlib.sha256(b"hts").hexdigest()),
    )


def test_extra_file_the_signer_excluded_says_so() -> None:
    expected = Expected(
        Algorithm.SHA256, Method.FILES, None, {"a": ExpectedFile("a", 7, D)}, "signature m.sig", ("logs",)
    )
    problems = compare(
        expected, _manifest(FileEntry("a", 7, D), FileEntry("logs/x", 1, D), FileEntry("b", 1, D))
    )
    assert problems == [
        "extra: logs/x (not in signature m.sig; excluded by the signer)",
        "extra: b (not in signature m.sig)",
    ]


def test_shards_of_an_empty_file_against_a_nonempty_one() -> None:
    want = ExpectedFile("a", None, None, ())
    got = FileEntry("a", 4, None, (ShardDigest(0, 4, D),))
    assert compare(_expected(want, method=Method.SHARDS), _manifest(got)) == [
        "size mismatch: a expected 0 bytes (from its shards) got 4"
    ]


def test_integrity_error_lists_two_problems_one_per_line() -> None:
    error = integrity_error("m", ["missing: a", "extra: b"])
    assert str(error) == "integrity check failed for m (2 problems):\n  missing: a\n  extra: b"
