"""A digest labelled with one algorithm is never compared as another's (outside review 24).

A manifest lock (``airlock.manifest/v1``) and an OMS statement declare one algorithm for all their
digests, and a digest may carry its own prefix. The prefix was parsed and then thrown away: under
``"algorithm": "sha256"`` a digest written ``blake3:HEX`` was compared as a sha256, and a model
verified against a lock whose labels contradicted its parameters (shown below on the old code). A
prefix must now name the declared algorithm; bare hex still takes the declared one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from airlock.errors import FormatError
from airlock.integrity import TrustMode, hash, verify
from tests.integrity.integrity_helpers import build_model


def _manifest_lock(tmp_path: Path, model: Path, label: str | None) -> Path:
    doc = json.loads(hash(model).to_json())
    for item in doc["files"]:
        digest = item["digest"]
        item["digest"] = digest if label is None else f"{label}:{digest}"
    lock = tmp_path / "model.manifest.json"
    lock.write_text(json.dumps(doc))
    return lock


@pytest.mark.parametrize("label", [None, "sha256"])
def test_bare_or_matching_labels_verify(tmp_path: Path, label: str | None) -> None:
    model = build_model(tmp_path / "model")
    assert verify(model, lock=_manifest_lock(tmp_path, model, label)).mode is TrustMode.LOCK


def test_a_label_naming_another_algorithm_is_refused(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    lock = _manifest_lock(tmp_path, model, "blake3")  # the same 32-byte length as sha256
    with pytest.raises(FormatError) as info:
        verify(model, lock=lock)
    assert str(info.value) == (
        "lock file model.manifest.json, config.json: digest is labelled blake3, but the document "
        "declares sha256"
    )


def test_shard_digest_labels_are_checked_too(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    doc = json.loads(hash(model, shard_size=1 << 20).to_json())
    shard = doc["files"][0]["shards"][0]
    assert shard["digest"] == hashlib.sha256((model / "config.json").read_bytes()).hexdigest()
    shard["digest"] = "blake3:" + shard["digest"]
    lock = tmp_path / "shards.json"
    lock.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"digest is labelled blake3, but the document declares sha256"):
        verify(model, lock=lock)
