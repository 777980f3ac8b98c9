"""zip members compressed with bzip2 (12) and LZMA (14): Python's zipfile reads them, and so do
numpy's ``np.load`` and Keras, so airlock reads and analyses them, bounded like deflate."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from airlock import scan
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Verdict
from tests.formats.helpers import assert_malicious, payload, rules, scan_one
from tests.formats.zipcraft import Entry, build_zip, zip_lzma

_METHODS = {"bzip2": zipfile.ZIP_BZIP2, "lzma": zipfile.ZIP_LZMA}
_LOAD = "import sys, numpy as np\nwith np.load(sys.argv[1], allow_pickle=True) as f:\n    f['evil']\n"


def _evil_npy(marker: Path) -> bytes:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload(marker)


def _npz(path: Path, marker: Path, method: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        with zf.open("ok.npy", "w") as out:
            np.save(out, np.arange(10.0))
        zf.writestr("evil.npy", _evil_npy(marker))
    return path


@pytest.mark.parametrize("method", _METHODS)
def test_numpy_runs_a_payload_in_a_compressed_npz_and_airlock_names_it(tmp_path: Path, method: str) -> None:
    proof_marker = tmp_path / "proof"
    proof = _npz(tmp_path / "proof.npz", proof_marker, _METHODS[method])
    subprocess.run([sys.executable, "-c", _LOAD, str(proof)], check=True, timeout=60)
    assert proof_marker.exists()

    marker = tmp_path / "marker"
    report = scan_one(_npz(tmp_path / "arrays.npz", marker, _METHODS[method]))
    assert_malicious(report, "system", marker)
    assert any(f.location.members == ("evil.npy",) for f in report.findings if f.callable)
    assert "format.error" not in rules(report)


@pytest.mark.parametrize("method", _METHODS)
def test_ordinary_compressed_npz_is_clean(tmp_path: Path, method: str) -> None:
    path = tmp_path / "arrays.npz"
    with zipfile.ZipFile(path, "w", compression=_METHODS[method]) as zf:
        for name, array in {
            "a": np.arange(1000.0),
            "b": np.eye(7, dtype=np.int16),
            "c": np.array(["x", "yz"]),
        }.items():
            with zf.open(f"{name}.npy", "w") as out:
                np.save(out, array)
    with np.load(path) as loaded:
        assert loaded["b"].shape == (7, 7)
    report = scan_one(path)
    assert report.verdict is Verdict.CLEAN, report


def test_lzma_window_larger_than_memory_is_not_allocated(tmp_path: Path) -> None:
    # The properties may declare a 4 GiB dictionary; decoding needs no more than the output.
    marker = tmp_path / "marker"
    data = _evil_npy(marker)
    raw = build_zip(
        [Entry(b"evil.npy", data, method=14, flags=2, packed=zip_lzma(data, declared_dict=0xFFFFFFFF))]
    )
    path = tmp_path / "big-window.npz"
    path.write_bytes(raw)
    assert_malicious(scan_one(path), "system", marker)


@pytest.mark.parametrize("method", [12, 14])
def test_bomb_is_bounded_like_deflate(tmp_path: Path, method: int) -> None:
    path = tmp_path / "bomb.zip"
    path.write_bytes(build_zip([Entry(b"bomb.bin", b"\x00" * 20_000_000, method=method)]))
    report = scan(path, limits=DEFAULT_LIMITS.replace(compression_ratio_floor=1_000_000)).files[0]
    assert report.verdict is Verdict.ERROR
    assert any("max_compression_ratio" in f.message for f in report.findings), report


@pytest.mark.parametrize("method", [12, 14])
def test_member_longer_than_declared_is_a_limit(tmp_path: Path, method: int) -> None:
    path = tmp_path / "liar.zip"
    path.write_bytes(
        build_zip([Entry(b"a.bin", bytes(range(256)) * 40, method=method, uncompressed_size=1000)])
    )
    report = scan_one(path)
    assert report.verdict is Verdict.ERROR
    assert any("inflates past its declared size 1000" in f.message for f in report.findings), report


@pytest.mark.parametrize(
    ("packed", "message"),
    [
        (b"\x09\x14\x06\x00" + b"\x5d\x00\x00\x10\x00\x00" + b"\x00" * 20, "LZMA properties are 6 bytes"),
        (b"\x09\x14\x05\x00" + b"\xe1\x00\x00\x10\x00" + b"\x00" * 20, "properties byte 225"),
        (b"\x09\x14\x05\x00" + b"\x5d\x00", "shorter than its 9-byte header"),
        (zip_lzma(b"hello world" * 100)[:-20], "stream ends after"),
        (zip_lzma(b"hello world" * 100)[:30] + b"\xff" * 40, "lzma"),
    ],
)
def test_malformed_lzma_is_an_error(tmp_path: Path, packed: bytes, message: str) -> None:
    path = tmp_path / "bad.zip"
    path.write_bytes(build_zip([Entry(b"a.txt", b"hello world" * 100, method=14, packed=packed)]))
    report = scan_one(path)
    assert report.verdict is Verdict.ERROR, report
    assert any(message in f.message for f in report.findings), report.findings


def test_zipfile_agrees_the_crafted_lzma_member_is_valid(tmp_path: Path) -> None:
    data = b"hello world" * 100
    raw = build_zip([Entry(b"a.txt", data, method=14, flags=2)])
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert zf.read("a.txt") == data
    path = tmp_path / "ok.zip"
    path.write_bytes(raw)
    assert scan_one(path).verdict is Verdict.CLEAN
