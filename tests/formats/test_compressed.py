"""Compressed streams: joblib's compress= files CLEAN or MALICIOUS by content, bombs an ERROR."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib
from pathlib import Path

import joblib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from airlock import scan
from airlock._formats.base import Nested, PickleStream, ReadContext
from airlock._formats.compressed import COMPRESSED_READERS
from airlock.errors import FormatError
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Verdict
from tests.formats.helpers import assert_malicious, payload, rules, scan_one

METHODS = ["zlib", "gzip", "bz2", "lzma", "xz"]


class _Payload:
    """Pickles as ``os.system('touch <marker>')``; joblib.dump only calls __reduce__, which runs nothing."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _estimators() -> list[object]:
    rng = np.random.RandomState(0)
    x = rng.rand(40, 3)
    y = (x[:, 0] > 0.5).astype(int)
    return [
        RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y),
        make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
    ]


@pytest.mark.parametrize("method", METHODS)
def test_joblib_compressed_estimators_are_clean(tmp_path: Path, method: str) -> None:
    for i, model in enumerate(_estimators()):
        path = tmp_path / f"m{i}.joblib"
        joblib.dump(model, path, compress=(method, 3))
        report = scan_one(path)
        assert report.verdict is Verdict.CLEAN, (method, report.findings)
        assert report.format is not None and method in report.format


@pytest.mark.parametrize("method", METHODS)
def test_joblib_compressed_payload_is_malicious(tmp_path: Path, method: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.joblib"
    joblib.dump({"model": _Payload(marker)}, path, compress=(method, 3))
    report = scan_one(path)
    assert_malicious(report, "system", marker)
    assert any(f.location.members == (f"<{method}>",) for f in report.findings if f.callable)


def test_concatenated_gzip_members_are_all_read(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "two.gz"
    path.write_bytes(gzip.compress(b"\x80\x02N.") + gzip.compress(payload(marker)))
    # gzip.decompress (and joblib's reader) see one stream: the pickle stream is benign + payload
    assert gzip.decompress(path.read_bytes()).endswith(payload(marker))
    assert_malicious(scan_one(path), "system", marker)


def test_trailing_bytes_after_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(b"\x80\x02N.") + b"hidden stuff")
    report = scan_one(path)
    assert "compressed.trailing-data" in rules(report)
    assert report.verdict is Verdict.SUSPICIOUS


@pytest.mark.parametrize(
    "compress", [gzip.compress, bz2.compress, lzma.compress, zlib.compress], ids=["gzip", "bz2", "xz", "zlib"]
)
def test_bomb_is_a_limit_error(tmp_path: Path, compress: object) -> None:
    assert callable(compress)
    path = tmp_path / "bomb"
    path.write_bytes(compress(b"\x00" * 8_000_000))
    # 8 MB of zeros is ordinary data below the ratio floor; above it, the same ratio is a bomb.
    assert "limit.exceeded" not in rules(scan_one(path))
    report = scan(path, limits=DEFAULT_LIMITS.replace(compression_ratio_floor=1_000_000)).files[0]
    assert report.verdict is Verdict.ERROR
    assert "limit.exceeded" in rules(report)
    small = scan(
        path, limits=DEFAULT_LIMITS.replace(max_decompressed_bytes=1000, max_compression_ratio=10**9)
    )
    assert any("expands past 1000 bytes" in f.message for f in small.files[0].findings)


def test_lzma_decoder_memory_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "big-dict.lzma"
    # "lzma alone" header claiming a 1.5 GiB dictionary: the decoder would allocate it up front.
    path.write_bytes(b"\x5d" + (3 << 29).to_bytes(4, "little") + b"\xff" * 8 + b"\x00" * 32)
    report = scan_one(path)
    assert report.verdict is Verdict.ERROR
    assert any("decoder memory" in f.message for f in report.findings)


def test_truncated_stream_is_an_error(tmp_path: Path) -> None:
    for name, raw in [
        ("t.gz", gzip.compress(payload(tmp_path / "m") * 50)),
        ("t.xz", lzma.compress(b"x" * 5000)),
    ]:
        path = tmp_path / name
        path.write_bytes(raw[: len(raw) // 2])
        report = scan_one(path)
        assert report.verdict is Verdict.ERROR, report.findings


def test_lz4_and_zstd_are_unsupported_never_clean(tmp_path: Path) -> None:
    for name, magic in [("m.lz4", b"\x04\x22\x4d\x18"), ("m.zst", b"\x28\xb5\x2f\xfd")]:
        path = tmp_path / name
        path.write_bytes(magic + b"\x00" * 40)
        report = scan_one(path)
        assert report.verdict is Verdict.ERROR
        assert "format.unsupported" in rules(report)


def _ctx() -> ReadContext:
    return ReadContext(
        limits=DEFAULT_LIMITS.replace(max_decompressed_bytes=1 << 16), file_path=Path("x"), root=Path()
    )


SEEDS = [
    gzip.compress(b"\x80\x04K\x01." * 100),
    bz2.compress(b"abc" * 1000),
    lzma.compress(b"abc" * 1000),
    lzma.compress(b"abc" * 1000, format=lzma.FORMAT_ALONE),
    zlib.compress(b"abc" * 1000),
]


@settings(max_examples=300, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=6),
    cut=st.integers(1, 5000),
)
def test_mangled_streams_only_raise_format_error(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    raw = bytearray(seed)
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    data = bytes(raw[:cut])
    for reader in COMPRESSED_READERS:
        if reader.sniff(data[:4096], len(data)):
            try:
                for fact in reader.read(memoryview(data), _ctx()):
                    if isinstance(fact, Nested | PickleStream):
                        assert len(fact.data) <= 1 << 16
            except FormatError:
                pass
            break
