""".npy / .npz: header parsing against numpy itself, object arrays as pickles, exact data length."""

from __future__ import annotations

import contextlib
import io
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock._formats.npy import NpyReader, dtype_info
from airlock._formats.pyliteral import parse_literal
from airlock.errors import FormatError, LimitError
from airlock.results import Verdict
from tests.formats.helpers import assert_malicious, payload, rules, scan_one

DTYPES: list[np.dtype[Any]] = [
    np.dtype("<i8"), np.dtype(">f4"), np.dtype("<f2"), np.dtype("?"), np.dtype("<c16"), np.dtype("<U7"),
    np.dtype("S5"), np.dtype("V3"), np.dtype("<M8[ns]"), np.dtype("<m8[D]"), np.dtype("u1"),
    np.dtype([("a", "<i4"), ("b", "<f8", (2, 3))]),
    np.dtype([("x", [("y", "<i2"), ("z", "S3")]), ("w", "<u8")]),
    np.dtype({"names": ["a", "b"], "formats": ["<i4", "<i2"], "offsets": [0, 8], "itemsize": 16}),
    np.dtype([(("title", "t"), "<i4")]),
    np.dtype(("<i4", (2, 2))),
]  # fmt: skip


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array, allow_pickle=True)
    else:
        np.lib.format.write_array(buf, array, version=version, allow_pickle=True)
    return buf.getvalue()


def _read(raw: bytes) -> list[object]:
    from airlock._formats.base import ReadContext
    from airlock.limits import DEFAULT_LIMITS

    ctx = ReadContext(limits=DEFAULT_LIMITS, file_path=Path("x.npy"), root=Path())
    return list(NpyReader().read(memoryview(raw), ctx))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_itemsize_agrees_with_numpy(dtype: np.dtype[Any]) -> None:
    header = np.lib.format.header_data_from_array_1_0(np.zeros(2, dtype=dtype))
    assert dtype_info(parse_literal(repr(header["descr"]), 10_000)) == (
        np.zeros(2, dtype=dtype).itemsize,
        False,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_saved_arrays_are_clean(tmp_path: Path, dtype: np.dtype[Any], version: tuple[int, int]) -> None:
    path = tmp_path / "a.npy"
    path.write_bytes(_npy(np.zeros((3, 2), dtype=dtype), version))
    report = scan_one(path)
    assert report.verdict is Verdict.CLEAN, report.findings


def test_fortran_scalar_and_empty_arrays_are_clean(tmp_path: Path) -> None:
    for i, array in enumerate([np.asfortranarray(np.ones((3, 4))), np.array(5.0), np.zeros((0, 7))]):
        path = tmp_path / f"a{i}.npy"
        path.write_bytes(_npy(array))
        assert scan_one(path).verdict is Verdict.CLEAN


def test_object_arrays_are_analysed_as_pickles(tmp_path: Path) -> None:
    benign = tmp_path / "obj.npy"
    benign.write_bytes(_npy(np.array([1, "two", None], dtype=object)))
    assert scan_one(benign).verdict is Verdict.CLEAN
    structured = tmp_path / "objfield.npy"
    structured.write_bytes(_npy(np.zeros(2, dtype=[("a", "<i4"), ("o", "O")])))
    assert scan_one(structured).verdict is Verdict.CLEAN


def _evil_npy(marker: Path, descr: str = "'|O'") -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload(marker)


@pytest.mark.parametrize("descr", ["'|O'", "[('a', '<i4'), ('b', [('c', '|O')])]", "('|O', (2,))"])
def test_object_array_payload(tmp_path: Path, descr: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.npy"
    path.write_bytes(_evil_npy(marker, descr))
    assert_malicious(scan_one(path), "system", marker)


def test_malicious_npy_inside_npz(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "arrays.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.npy", _npy(np.arange(5)))
        zf.writestr("evil.npy", _evil_npy(marker))
    report = scan_one(path)
    assert_malicious(report, "system", marker)
    assert any(f.location.members == ("evil.npy",) for f in report.findings if f.callable)


def test_savez_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "ok.npz"
    np.savez_compressed(path, a=np.arange(100), b=np.zeros((4, 4), dtype=DTYPES[11]))
    assert scan_one(path).verdict is Verdict.CLEAN


def test_trailing_bytes_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    path.write_bytes(_npy(np.arange(4)) + b"hidden")
    report = scan_one(path)
    assert rules(report) == {"npy.trailing-data"}
    assert "6 bytes after the array data" in report.findings[0].message
    assert np.load(path).tolist() == [0, 1, 2, 3]  # numpy ignores them


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda raw: raw[:-1], r"npy data is 31 bytes, shape \(4,\) x itemsize 8 needs 32"),
        (lambda raw: raw[:6] + b"\x04\x00" + raw[8:], "version 4.0 is not 1.0, 2.0 or 3.0"),
        (lambda raw: raw[:8] + b"\xff\xff" + raw[10:], "header length 65535 runs past the end"),
        (
            lambda raw: raw.replace(b"'shape'", b"'shapf'"),
            "are not exactly 'descr', 'fortran_order', 'shape'",
        ),
        (lambda raw: raw.replace(b"False", b"0    "), "fortran_order is 0, not True or False"),
        (lambda raw: raw.replace(b"(4,)", b"(-4,)"), r"shape \(-4,\) is not a tuple"),
        (lambda raw: raw.replace(b"'<i8'", b"'<x8'"), "type string '<x8' is not one airlock can size"),
        (lambda raw: raw.replace(b"{", b"[", 1), "expected"),
        (lambda raw: raw.replace(b"'descr'", b"__import__"), "expected a string"),
    ],
)
def test_malformed_npy(mutate: object, match: str) -> None:
    raw = _npy(np.arange(4, dtype="<i8"))
    assert callable(mutate)
    with pytest.raises(FormatError, match=match):
        _read(mutate(raw))


def test_header_limit() -> None:
    from airlock._formats.base import ReadContext
    from airlock.limits import DEFAULT_LIMITS

    raw = _npy(np.arange(4), (2, 0))
    ctx = ReadContext(limits=DEFAULT_LIMITS.replace(max_header_bytes=16), file_path=Path("x"), root=Path())
    with pytest.raises(LimitError, match="exceeds 16"):
        list(NpyReader().read(memoryview(raw), ctx))


def test_literal_parser_edges() -> None:
    assert parse_literal("(3)", 10) == 3
    assert parse_literal("(3,)", 10) == (3,)
    assert parse_literal("{'a': [1, (2, 'x\\'y')], 'b': None}", 100) == {"a": [1, (2, "x'y")], "b": None}
    for bad, match in [("1.5", "only decimal integers"), ("{'a': 1, 'a': 2}", "duplicate key"),
                       ("(" * 40 + ")" * 40, "nested deeper than 32"), ("'abc", "unterminated string"),
                       ("x" * 20, "exceeds 10")]:  # fmt: skip
        with pytest.raises(FormatError, match=match):
            parse_literal(bad, 10 if bad.startswith("x") else 1000)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="{}[](),:'\"0123456789-+ TrueFalsNn_abc\\\n", max_size=80))
def test_literal_parser_only_raises_format_error(text: str) -> None:
    with contextlib.suppress(FormatError):
        parse_literal(text, 1000)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.sampled_from([_npy(np.arange(6).reshape(2, 3)), _npy(np.zeros(2, dtype=DTYPES[11]), (3, 0))]),
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, 400),
)
def test_mangled_npy_only_raises_format_error(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    raw = bytearray(seed)
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    try:
        _read(bytes(raw[: max(cut, 0)]))
        _read(bytes(raw))
    except FormatError:
        pass
