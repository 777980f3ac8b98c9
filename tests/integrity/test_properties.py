"""Property tests: a manifest depends only on names and bytes; any single-byte change is caught."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlock.errors import IntegrityError
from airlock.integrity import HashLimits, hash, verify
from airlock.integrity._lock import render_lock

_NAME = st.text(alphabet="ab.-_Z0é", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))
_PATHS = st.lists(_NAME, min_size=1, max_size=3).map("/".join)
_TREES = st.dictionaries(_PATHS, st.binary(max_size=300), min_size=1, max_size=8).filter(
    # a path cannot be both a file and a folder
    lambda files: not any(other.startswith(path + "/") for path in files for other in files)
)
_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _write(root: Path, files: dict[str, bytes], order: list[str]) -> Path:
    root.mkdir(parents=True)
    for rel in order:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[rel])
    return root


@_SETTINGS
@given(files=_TREES, seed=st.integers(0, 2**32 - 1), shard=st.sampled_from([None, 7, 64]))
def test_manifest_independent_of_creation_order_and_location(
    files: dict[str, bytes], seed: int, shard: int | None
) -> None:
    order = sorted(files)
    shuffled = order[:]
    random.Random(seed).shuffle(shuffled)  # noqa: S311 - test data order, not crypto
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        first = hash(
            _write(Path(a) / "m", files, order),
            shard_size=shard,
            limits=HashLimits(workers=1, min_shard_size=1),
        )
        second = hash(
            _write(Path(b) / "deeper" / "elsewhere", files, shuffled),
            shard_size=shard,
            limits=HashLimits(workers=3, chunk_size=4096, min_shard_size=1),
        )
    assert first.files == second.files
    assert first.root_digest == second.root_digest
    assert [e.path for e in first.files] == sorted(files, key=lambda p: p.split("/"))


@_SETTINGS
@given(files=_TREES, data=st.data(), shard=st.sampled_from([None, 5]))
def test_any_single_byte_change_fails_verification(
    files: dict[str, bytes], data: st.DataObject, shard: int | None
) -> None:
    candidates = sorted(p for p, content in files.items() if content)
    if not candidates:
        return
    victim = data.draw(st.sampled_from(candidates))
    offset = data.draw(st.integers(0, len(files[victim]) - 1))
    mask = data.draw(st.integers(1, 255))
    with tempfile.TemporaryDirectory() as tmp:
        root = _write(Path(tmp) / "m", files, sorted(files))
        lock = Path(tmp) / "lock.json"
        small = HashLimits(min_shard_size=1)
        lock.write_text(
            hash(root, shard_size=shard, limits=small).to_json() if shard else render_lock(hash(root))
        )
        verify(root, lock=lock, limits=small)  # clean before the change
        changed = bytearray(files[victim])
        changed[offset] ^= mask
        (root / victim).write_bytes(bytes(changed))
        with pytest.raises(IntegrityError, match=r"hash mismatch: ") as info:
            verify(root, lock=lock, limits=small)
    assert f"hash mismatch: {victim} " in str(info.value)
