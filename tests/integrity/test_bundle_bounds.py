"""A signature bundle's structure is bounded before it is parsed (outside review 24).

The bundle is read before anything in it is authenticated. Its JSON was parsed whole, up to
``max_document_bytes`` (64 MiB): a bundle of 64 MiB of empty arrays cost 1.7 GB of memory and 16 s of
CPU on the old code before the signature was looked at, and a valid bundle padded with such junk in a
member nobody reads still verified. Now ``1 + commas + brackets`` (an upper bound on the JSON values
parsing can make) must be at most ``MAX_BUNDLE_VALUES`` before parsing starts; real bundles hold a few
dozen values, their bulk being in strings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.errors import LimitError
from airlock.integrity import TrustMode, verify

#: ``airlock.integrity._oms.MAX_BUNDLE_VALUES`` (docs/integrity.md)
MAX_BUNDLE_VALUES = 10_000


def _bound(data: bytes) -> int:
    return 1 + data.count(b",") + data.count(b"[") + data.count(b"{")


def test_padding_with_many_empty_arrays_is_refused_before_parsing(signed: tuple[Path, Path, Path]) -> None:
    model, sig, public = signed
    doc = json.loads(sig.read_bytes())
    doc["padding"] = [[] for _ in range(1_000_000)]  # 4 MB; a 64 MiB one took 1.7 GB to parse
    sig.write_text(json.dumps(doc, separators=(",", ":")))
    with pytest.raises(LimitError) as info:
        verify(model, signature=sig, key=public)
    assert str(info.value) == (
        f"signature bundle: up to {_bound(sig.read_bytes())} JSON values (commas and brackets), more than the "
        f"{MAX_BUNDLE_VALUES} a bundle holds; refused before parsing"
    )


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_bound_at_the_limit(signed: tuple[Path, Path, Path], delta: int) -> None:
    model, sig, public = signed
    assert _bound(sig.read_bytes()) == 14  # what airlock (and model-signing) write: far below
    doc = json.loads(sig.read_bytes())
    doc["note"] = ""
    base = _bound(json.dumps(doc).encode())
    doc["note"] = "," * (MAX_BUNDLE_VALUES + delta - base)  # commas inside a string count too
    sig.write_text(json.dumps(doc))
    assert _bound(sig.read_bytes()) == MAX_BUNDLE_VALUES + delta
    if delta <= 0:
        assert verify(model, signature=sig, key=public).mode is TrustMode.KEY
    else:
        with pytest.raises(LimitError, match=r"up to 10001 JSON values"):
            verify(model, signature=sig, key=public)
