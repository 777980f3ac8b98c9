"""Manifests by known answer: resources, the OMS root digest, the JSON and sha256sum-style text forms,
coreutils name escaping, the shard ranges (count limit at N-1, N, N+1; the shard floor) and
build_manifest over real files, each compared with a value worked out by hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from airlock.errors import LimitError
from airlock.integrity._manifest import (
    MANIFEST_FORMAT,
    FileEntry,
    Manifest,
    Resource,
    ShardDigest,
    build_manifest,
    escape_text_path,
)
from airlock.integrity._params import Algorithm, HashLimits, HashParams, Method
from airlock.integrity._walk import walk


def _h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


A, B, C = _h(b"a"), _h(b"b"), _h(b"c")
SHARDS = HashParams(method=Method.SHARDS, shard_size=4)
SMALL = HashLimits(min_shard_size=1, workers=1)


def test_format_name() -> None:
    assert MANIFEST_FORMAT == "airlock.manifest/v1"


def test_resources_and_root_digest_of_files() -> None:
    manifest = Manifest("m", HashParams(), (FileEntry("x", 1, A), FileEntry("y/z", 1, B)))
    assert list(manifest.resources()) == [Resource("x", A), Resource("y/z", B)]
    assert manifest.root_digest == hashlib.sha256(bytes.fromhex(A) + bytes.fromhex(B)).hexdigest()
    assert manifest.total_bytes == 2


def test_resources_and_root_digest_of_shards() -> None:
    entry = FileEntry("w", 9, None, (ShardDigest(0, 4, A), ShardDigest(4, 8, B), ShardDigest(8, 9, C)))
    empty = FileEntry("e", 0, None, ())
    manifest = Manifest("m", SHARDS, (entry, empty))
    assert list(manifest.resources()) == [Resource("w:0:4", A), Resource("w:4:8", B), Resource("w:8:9", C)]
    raw = b"".join(bytes.fromhex(d) for d in (A, B, C))
    assert manifest.root_digest == hashlib.sha256(raw).hexdigest()
    assert manifest.total_bytes == 9


def test_root_digest_of_nothing() -> None:
    assert Manifest("m", HashParams(), ()).root_digest == hashlib.sha256(b"").hexdigest()
    assert Manifest("m", HashParams(), ()).total_bytes == 0


def test_to_json_of_files_known_answer() -> None:
    params = HashParams(Algorithm.BLAKE2B, Method.FILES, None, True, ("logs", "x.sig"))
    manifest = Manifest("modèle", params, (FileEntry("é", 1, A), FileEntry("b", 0, B)))
    root = hashlib.sha256(bytes.fromhex(A) + bytes.fromhex(B)).hexdigest()
    expected = (
        "{\n"
        '  "format": "airlock.manifest/v1",\n'
        '  "name": "modèle",\n'
        '  "parameters": {\n'
        '    "algorithm": "blake2b",\n'
        '    "method": "files",\n'
        '    "shard_size": null,\n'
        '    "allow_symlinks": true,\n'
        '    "excluded": [\n'
        '      "logs",\n'
        '      "x.sig"\n'
        "    ]\n"
        "  },\n"
        '  "root_digest": {\n'
        f'    "sha256": "{root}"\n'
        "  },\n"
        '  "files": [\n'
        "    {\n"
        '      "path": "é",\n'
        '      "size": 1,\n'
        f'      "digest": "{A}"\n'
        "    },\n"
        "    {\n"
        '      "path": "b",\n'
        '      "size": 0,\n'
        f'      "digest": "{B}"\n'
        "    }\n"
        "  ]\n"
        "}\n"
    )
    assert manifest.to_json() == expected


def test_to_json_of_shards_known_answer() -> None:
    entry = FileEntry("w", 5, None, (ShardDigest(0, 4, A), ShardDigest(4, 5, B)))
    manifest = Manifest("m", SHARDS, (entry, FileEntry("e", 0, None, ())))
    document = json.loads(manifest.to_json())
    assert document == {
        "format": "airlock.manifest/v1",
        "name": "m",
        "parameters": {
            "algorithm": "sha256",
            "method": "shards",
            "shard_size": 4,
            "allow_symlinks": False,
            "excluded": [],
        },
        "root_digest": {"sha256": hashlib.sha256(bytes.fromhex(A) + bytes.fromhex(B)).hexdigest()},
        "files": [
            {
                "path": "w",
                "size": 5,
                "shards": [{"start": 0, "end": 4, "digest": A}, {"start": 4, "end": 5, "digest": B}],
            },
            {"path": "e", "size": 0, "shards": []},
        ],
    }
    assert list(document) == ["format", "name", "parameters", "root_digest", "files"]
    assert list(document["files"][0]) == ["path", "size", "shards"]
    assert manifest.to_json().endswith("}\n")


def test_to_text_known_answer() -> None:
    manifest = Manifest("m", HashParams(), (FileEntry("a b", 1, A), FileEntry("d/e", 1, B)))
    assert manifest.to_text() == f"{A}  a b\n{B}  d/e\n"
    sharded = Manifest("m", SHARDS, (FileEntry("w", 5, None, (ShardDigest(0, 4, A), ShardDigest(4, 5, B))),))
    assert sharded.to_text() == f"{A}  w:0:4\n{B}  w:4:5\n"
    assert Manifest("m", HashParams(), ()).to_text() == ""


def test_to_text_of_a_single_file_uses_its_name() -> None:
    assert Manifest("model.bin", HashParams(), (FileEntry(".", 1, A),)).to_text() == f"{A}  model.bin\n"
    escaped = Manifest("a\nb", HashParams(), (FileEntry(".", 1, A),))
    assert escaped.to_text() == f"\\{A}  a\\nb\n"


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("plain", "{d}  plain\n"),
        ("back\\slash", "\\{d}  back\\\\slash\n"),
        ("new\nline", "\\{d}  new\\nline\n"),
        ("carriage\rreturn", "\\{d}  carriage\\rreturn\n"),
        ("all\\\n\r", "\\{d}  all\\\\\\n\\r\n"),
        ("tab\tis plain", "{d}  tab\tis plain\n"),
    ],
)
def test_to_text_escapes_like_coreutils(name: str, line: str) -> None:
    manifest = Manifest("m", HashParams(), (FileEntry(name, 1, A),))
    assert manifest.to_text() == line.format(d=A)


@pytest.mark.parametrize(
    ("path", "escaped"),
    [
        ("a", "a"),
        ("a\\b", "a\\\\b"),
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("\\n", "\\\\n"),
        ("x\r\n\\", "x\\r\\n\\\\"),
        ("a\tb", "a\tb"),
    ],
)
def test_escape_text_path(path: str, escaped: str) -> None:
    assert escape_text_path(path) == escaped


def _tree(tmp_path: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    return tmp_path


def test_build_manifest_of_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "model", {"b.bin": b"weights", "a/c.txt": b"", "a/d": b"xyz"})
    params = HashParams()
    manifest = build_manifest(walk(root, params, SMALL), params, SMALL)
    assert manifest == Manifest(
        "model",
        params,
        (
            FileEntry("a/c.txt", 0, _h(b"")),
            FileEntry("a/d", 3, _h(b"xyz")),
            FileEntry("b.bin", 7, _h(b"weights")),
        ),
    )


def test_build_manifest_of_shards(tmp_path: Path) -> None:
    root = _tree(tmp_path / "model", {"a": b"123456789", "b": b"", "c": b"1234", "d": b"12345"})
    params = HashParams(method=Method.SHARDS, shard_size=4)
    manifest = build_manifest(walk(root, params, SMALL), params, SMALL)
    assert manifest == Manifest(
        "model",
        params,
        (
            FileEntry(
                "a",
                9,
                None,
                (ShardDigest(0, 4, _h(b"1234")), ShardDigest(4, 8, _h(b"5678")), ShardDigest(8, 9, _h(b"9"))),
            ),
            FileEntry("b", 0, None, ()),
            FileEntry("c", 4, None, (ShardDigest(0, 4, _h(b"1234")),)),
            FileEntry("d", 5, None, (ShardDigest(0, 4, _h(b"1234")), ShardDigest(4, 5, _h(b"5")))),
        ),
    )


def test_build_manifest_of_a_single_file(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    params = HashParams(algorithm=Algorithm.BLAKE2B)
    manifest = build_manifest(walk(path, params, SMALL), params, SMALL)
    assert manifest == Manifest("w.bin", params, (FileEntry(".", 3, hashlib.blake2b(b"abc").hexdigest()),))


@pytest.mark.parametrize(("resources", "refused"), [(5, False), (6, False), (4, True)])
def test_shard_count_limit_at_n_minus_1_n_n_plus_1(tmp_path: Path, resources: int, refused: bool) -> None:
    # 9 bytes in shards of 4 make 3 shards, 4 bytes make 1 and 5 bytes 2 (ceiling, not floor): 6 in all
    root = _tree(tmp_path / "model", {"a": b"123456789", "b": b"1234", "c": b"12345", "e": b""})
    params = HashParams(method=Method.SHARDS, shard_size=4)
    limits = HashLimits(min_shard_size=1, workers=1, max_resources=resources)
    tree = walk(root, params, limits)
    if resources < 6:
        with pytest.raises(LimitError) as info:
            build_manifest(tree, params, limits)
        assert str(info.value) == (
            f"hashing: shard size 4 makes 6 shards, more than {resources} (limit max_resources); "
            "use a larger shard size"
        )
    else:
        assert sum(1 for _ in build_manifest(tree, params, limits).resources()) == 6
    assert refused == (resources < 5)


def test_shard_count_is_the_ceiling(tmp_path: Path) -> None:
    root = _tree(tmp_path / "model", {"a": b"123456789"})
    params = HashParams(method=Method.SHARDS, shard_size=4)
    for limit, ok in ((3, True), (2, False)):
        limits = HashLimits(min_shard_size=1, workers=1, max_resources=limit)
        tree = walk(root, params, limits)
        if ok:
            assert len(build_manifest(tree, params, limits).files[0].shards) == 3
        else:
            with pytest.raises(LimitError, match="makes 3 shards, more than 2"):
                build_manifest(tree, params, limits)


def test_files_method_is_not_bound_by_the_shard_count(tmp_path: Path) -> None:
    root = _tree(tmp_path / "model", {"a": b"1", "b": b"2"})
    limits = HashLimits(workers=1, max_resources=1, min_shard_size=1 << 30)
    # the method files hashes each file whole: neither the shard floor nor a shard count applies
    manifest = build_manifest(walk(root, HashParams(), HashLimits()), HashParams(), limits)
    assert [f.digest for f in manifest.files] == [_h(b"1"), _h(b"2")]


@pytest.mark.parametrize(("floor", "refused"), [(3, False), (4, False), (5, True)])
def test_shard_floor_at_n_minus_1_n_n_plus_1(tmp_path: Path, floor: int, refused: bool) -> None:
    root = _tree(tmp_path / "model", {"a": b"123456789"})
    params = HashParams(method=Method.SHARDS, shard_size=4)
    limits = HashLimits(min_shard_size=floor, workers=1)
    tree = walk(root, params, limits)
    if refused:
        with pytest.raises(LimitError) as info:
            build_manifest(tree, params, limits)
        assert str(info.value).startswith("hashing: shard size 4 is below the minimum of 5 bytes")
    else:
        assert len(build_manifest(tree, params, limits).files[0].shards) == 3


@pytest.mark.parametrize("params", [HashParams(), SHARDS], ids=["files", "shards"])
def test_a_digest_count_that_does_not_match_the_ranges_is_refused(
    tmp_path: Path, params: HashParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hash_ranges returns one digest per range; should it ever return fewer, the manifest must not
    # silently drop the files left over (a manifest of fewer files than the folder holds)
    from airlock.integrity import _manifest
    from airlock.integrity._digest import hash_ranges as real

    root = _tree(tmp_path / "model", {"a": b"1", "b": b"2"})
    monkeypatch.setattr(_manifest, "hash_ranges", lambda *args: real(*args)[:-1])
    with pytest.raises(ValueError, match="zip"):
        build_manifest(walk(root, params, SMALL), params, SMALL)
