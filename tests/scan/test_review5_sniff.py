"""Content joblib.load opens by its first bytes must be recognised by the same first bytes.

Two gaps between what ``joblib.load`` accepts and what the sniff took:

* joblib <= 0.9's **Z-file** (``ZF`` + hex length + zlib), which ``joblib.load`` still opens
  by its prefix whatever the file's name, was no known format: in a folder, under a name that is
  not a model file name, it was *skipped* and the folder CLEAN; as a torch storage, unread.
* a **.lzma** header whose dictionary size liblzma's auto decoder takes but no encoder writes
  (below 4 KiB, e.g. 256 or 0): the sniff wanted what encoders write, so such a storage of a
  checkpoint was never read (CLEAN) and such a file was skipped.

The sniff now follows the loader: the ``ZF`` prefix, and liblzma's own rule for the dictionary
size (checked against the real decoder below).
"""

from __future__ import annotations

import lzma
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import airlock
from airlock._formats.registry import sniff_format
from airlock.results import Verdict

_JOBLIB = "import joblib, sys\ntry: joblib.load(sys.argv[1])\nexcept Exception: pass"


def _payload(marker: Path) -> bytes:
    return b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."


def _zfile(data: bytes, *, length: bytes | None = None, space: bool = False) -> bytes:
    field = length if length is not None else hex(len(data)).encode()
    return b"ZF" + field.ljust(19) + (b" " if space else b"") + zlib.compress(data)


def _lzma_alone(data: bytes, dict_size: int) -> bytes:
    raw = bytearray(lzma.compress(data, format=lzma.FORMAT_ALONE))
    struct.pack_into("<I", raw, 1, dict_size)
    return bytes(raw)


def _proven(path: Path, marker: Path) -> None:
    subprocess.run([sys.executable, "-c", _JOBLIB, path], check=True, timeout=120, capture_output=True)
    assert marker.is_dir(), "the real joblib.load did not run the payload"
    marker.rmdir()


def _named(report: airlock.Report) -> list[str | None]:
    return [f.callable for f in report.findings() if f.rule == "pickle.dangerous-global"]


def _folder(tmp_path: Path, raw: bytes) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "vocab.pkl").write_bytes(b"\x80\x04}\x94.")  # a clean file beside it
    path = folder / "state.dat"  # not a model file name: unknown content here is skipped
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize(
    ("length", "space"),
    [(None, False), (None, True), (b" 0x_3", False)],
    ids=["plain", "py2-space", "int-forms"],
)
def test_joblib_zfile_is_read_whatever_its_name(tmp_path: Path, length: bytes | None, space: bool) -> None:
    pytest.importorskip("joblib")
    marker = tmp_path / "ran"
    data = _payload(marker)
    if length is not None:
        length = length.replace(b"3", hex(len(data))[2:].encode())  # " 0x_<hex>": int(..., 16) takes it
    path = _folder(tmp_path, _zfile(data, length=length, space=space))
    _proven(path, marker)
    report = airlock.scan(path.parent)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    assert _named(report) == ["os.mkdir"]
    assert not report.skipped


def test_joblib_zfile_length_and_header_faults(tmp_path: Path) -> None:
    data = b"\x80\x04}\x94."
    bad_hex = tmp_path / "a.dat"
    bad_hex.write_bytes(_zfile(data, length=b"zz"))
    assert [f.rule for f in airlock.scan(bad_hex).findings()] == ["format.error"]
    wrong_length = tmp_path / "b.dat"
    wrong_length.write_bytes(_zfile(b"cos\nsystem\n(Vx\ntR.", length=b"0x1"))
    report = airlock.scan(wrong_length)
    # joblib asserts the length (python -O does not): the payload is still named
    assert report.verdict is Verdict.MALICIOUS
    assert {f.rule for f in report.findings()} >= {"format.error", "pickle.dangerous-global"}
    trailing = tmp_path / "c.dat"
    trailing.write_bytes(_zfile(data) + b"hidden")
    assert [f.rule for f in airlock.scan(trailing).findings()] == ["compressed.trailing-data"]


@pytest.mark.parametrize("dict_size", [0, 256, 768, 4096])  # joblib: prefix 5d 00
def test_lzma_small_dictionary_file_is_read(tmp_path: Path, dict_size: int) -> None:
    pytest.importorskip("joblib")
    marker = tmp_path / "ran"
    path = _folder(tmp_path, _lzma_alone(_payload(marker), dict_size))
    _proven(path, marker)
    report = airlock.scan(path.parent)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    assert _named(report) == ["os.mkdir"]


@pytest.mark.parametrize("kind", ["lzma-256", "zfile"])
def test_storage_joblib_opens_is_read(tmp_path: Path, kind: str) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("joblib")
    marker = tmp_path / "ran"
    raw = _lzma_alone(_payload(marker), 256) if kind == "lzma-256" else _zfile(_payload(marker))
    extracted = tmp_path / "extracted.bin"
    extracted.write_bytes(raw)
    _proven(extracted, marker)
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()}, path)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    assert _named(report) == ["os.mkdir"]


def test_dictionary_rule_is_liblzmas() -> None:
    # the oracle is liblzma's own auto decoder (what joblib's lzma.LZMAFile uses), not the rule
    base = bytearray(lzma.compress(b"x" * 64, format=lzma.FORMAT_ALONE))
    sizes = [0, 1, 2, 3, 5, 6, 7, 255, 256, 383, 384, 385, 4095, 4096, 6144, 6145, 0x1300]
    sizes += [(1 << 31) + (1 << 30), (1 << 31) + (1 << 29), 0xFFFFFFFE, 0xFFFFFFFF]
    sizes += [(1 << n) + d for n in range(2, 32) for d in (-1, 0, 1)]
    for size in sizes:
        raw = bytearray(base)
        struct.pack_into("<I", raw, 1, size & 0xFFFFFFFF)
        try:
            lzma.LZMADecompressor(lzma.FORMAT_AUTO, memlimit=1 << 20).decompress(bytes(raw))
            takes = True
        except lzma.LZMAError as exc:
            takes = "Memory usage limit" in str(exc)  # the header passed; only the window is big
        fmt = sniff_format(bytes(raw[:4096]), len(raw))
        assert (fmt is not None and fmt.name == "lzma") is takes, hex(size)
