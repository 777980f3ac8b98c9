"""``.npy`` headers are read as numpy reads them, or refused (seeded differential fuzz + regressions)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.results import Verdict
from tests.formats.helpers import assert_malicious, payload, scan_one
from tests.formats.npy_fuzz import airlock_reading, build, disagreements

np = pytest.importorskip("numpy")


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_headers_agree_with_numpy(tmp_path: Path, seed: int) -> None:
    bad, stats = disagreements(tmp_path, seed, 1500)
    assert not bad, "\n".join(bad[:10])
    assert stats["agree"] > 100, stats  # the generator still makes headers numpy reads


def _object_npy(descr: str, marker: Path) -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload(marker)


def test_object_dtype_spelled_with_octal_escapes(tmp_path: Path) -> None:
    # '|\117' is '|O' to Python: numpy unpickles the data (allow_pickle=True).
    descr = "'|\\117'"
    proof_marker = tmp_path / "proof"
    proof = tmp_path / "proof.npy"
    proof.write_bytes(_object_npy(descr, proof_marker))
    code = "import sys, numpy as np\nnp.load(sys.argv[1], allow_pickle=True)\n"
    subprocess.run([sys.executable, "-c", code, str(proof)], check=True, timeout=60)
    assert proof_marker.exists()
    marker = tmp_path / "marker"
    path = tmp_path / "evil.npy"
    path.write_bytes(_object_npy(descr, marker))
    assert_malicious(scan_one(path), "system", marker)


@pytest.mark.parametrize(
    ("descr", "shape", "expected"),
    [
        ("'<\\146\\070'", "(2,)", {"itemsize": 8, "object": False}),  # '<f8' in octal escapes
        ("'|O4'", "(1,)", {"itemsize": 8, "object": True}),  # numpy: an 8-byte object
        ("'<f8'", "(-0, 2)", {"itemsize": 8, "object": False}),
        ("'>i8'", "(00,)", {"itemsize": 8, "object": False}),
        ("[('', '|V4'), ('', '|V4'), ('a', '<f4')]", "(1,)", {"itemsize": 12, "object": False}),
    ],
)
def test_forms_numpy_reads_are_read_the_same(descr: str, shape: str, expected: dict[str, object]) -> None:
    raw = build(f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}", 1)
    reading = airlock_reading(raw)
    assert reading is not None
    assert {k: reading[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("descr", "shape"),
    [
        ("'i3'", "(1,)"),  # numpy has no 3-byte int
        ("'<f8[ns]'", "(1,)"),  # only datetimes take a unit
        ("[('a', '<i4'), ('a', '<f8')]", "(1,)"),  # a field name twice
        ("[(('t', 'a'), '<f4'), ('t', '<i2')]", "(1,)"),  # a title reused as a name
        ("('<f4', (2,))", "(2,)"),  # a sub-array dtype for the whole array: numpy cannot load it
        ("'<f8'", "(007,)"),  # Python refuses leading zeros
        ("'<f8\\0'", "(1,)"),  # NUL
    ],
)
def test_forms_numpy_refuses_are_refused(tmp_path: Path, descr: str, shape: str) -> None:
    raw = build(f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}", 1)
    assert airlock_reading(raw) is None
    path = tmp_path / "x.npy"
    path.write_bytes(raw)
    assert scan_one(path).verdict is Verdict.ERROR


@pytest.mark.parametrize(("version", "accepted"), [(1, True), (2, True), (3, False)])
def test_python2_long_literals_as_numpy_reads_them(tmp_path: Path, version: int, accepted: bool) -> None:
    # numpy drops an 'L' after a number in 1.0/2.0 headers (files written by Python 2)
    raw = build("{'descr': '<f8', 'fortran_order': False, 'shape': (3L, 2 L), }", version)
    reading = airlock_reading(raw)
    path = tmp_path / "py2.npy"
    path.write_bytes(raw[: len(raw) - 4096] + bytes(48))
    code = "import sys, numpy as np\nprint(np.load(sys.argv[1]).shape)\n"
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode == 0) is accepted, done.stderr
    if accepted:
        assert reading is not None and reading["shape"] == [3, 2]
        assert "(3, 2)" in done.stdout
        assert scan_one(path).verdict is Verdict.CLEAN
    else:
        assert reading is None
        assert scan_one(path).verdict is Verdict.ERROR
