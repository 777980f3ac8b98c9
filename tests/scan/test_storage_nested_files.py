"""Torch storages that start like a file another loader opens by its magic are scanned as that file.

A storage member ``<p>/data/<key>`` that did not start like a pickle was not read at all. Extracted
and opened by the loader its magic selects, it ran code: ``joblib.load`` decompresses gzip (and
zlib, bz2, xz, lzma, lz4) and unpickles; ``torch.load`` opens a zip checkpoint; ``numpy.load``
an object ``.npy``. Random tensor bytes that merely start like such a file stay clean (their
bytes not parsing as the format is no finding). Each payload is proven with its real loader in a
subprocess.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import airlock
from airlock.results import Verdict

torch = pytest.importorskip("torch")


def _pickle_payload(marker: Path) -> bytes:
    return b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."


def _checkpoint_with_storage(path: Path, raw: bytes) -> None:
    torch.save({"w": torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()}, path)


def _proven(raw: bytes, marker: Path, load: str, tmp_path: Path) -> None:
    member = tmp_path / "extracted.bin"
    member.write_bytes(raw)
    subprocess.run([sys.executable, "-c", load, str(member)], check=True, timeout=120, capture_output=True)
    assert marker.is_dir()
    marker.rmdir()


_JOBLIB = "import joblib, sys; joblib.load(sys.argv[1])"


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress], ids=["gzip", "zlib"])
def test_compressed_pickle_in_a_storage_is_named(tmp_path: Path, compress: object) -> None:
    pytest.importorskip("joblib")
    marker = tmp_path / "ran"
    assert callable(compress)
    raw = compress(_pickle_payload(marker))
    _proven(raw, marker, _JOBLIB, tmp_path)
    path = tmp_path / "weights.pt"
    _checkpoint_with_storage(path, raw)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    assert [f.callable for f in report.findings() if f.rule == "pickle.dangerous-global"] == ["os.mkdir"]


def test_zip_checkpoint_in_a_storage_is_named(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    inner = tmp_path / "inner.pt"
    torch.save({"x": 1}, inner)
    # the inner checkpoint's data.pkl replaced by the payload (a stored zip written by hand)
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(inner) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(name, _pickle_payload(marker) if name.endswith("data.pkl") else src.read(name))
    raw = buf.getvalue()
    _proven(raw, marker, "import torch, sys; torch.load(sys.argv[1], weights_only=False)", tmp_path)
    path = tmp_path / "weights.pt"
    _checkpoint_with_storage(path, raw)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS
    assert "os.mkdir" in [f.callable for f in report.findings() if f.rule == "pickle.dangerous-global"]


def test_object_npy_in_a_storage_is_named(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    raw = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + _pickle_payload(marker)
    _proven(raw, marker, "import numpy, sys; numpy.load(sys.argv[1], allow_pickle=True)", tmp_path)
    path = tmp_path / "weights.pt"
    _checkpoint_with_storage(path, raw)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS
    assert "os.mkdir" in [f.callable for f in report.findings()]


@pytest.mark.parametrize(
    "head",
    [
        b"\x1f\x8b\x08",
        b"\x78\x9c",
        b"\x5d\x00\x00",
        b"BZh9",
        b"\xfd7zXZ\x00",
        b"PK\x03\x04",
        b"\x93NUMPY",
        b"\x08",
    ],
)
def test_random_storage_that_starts_like_a_file_is_clean(tmp_path: Path, head: bytes) -> None:
    import numpy as np

    rng = np.random.default_rng(int.from_bytes(head[:2], "little"))
    path = tmp_path / "weights.pt"
    state = {
        f"t{i}": torch.frombuffer(
            bytearray(head + rng.integers(0, 256, 700, dtype=np.uint8).tobytes()), dtype=torch.uint8
        )
        for i in range(40)
    }
    torch.save({k: v.clone() for k, v in state.items()}, path)
    report = airlock.scan(path)
    assert report.verdict is Verdict.CLEAN, [(f.rule, f.message) for f in report.findings()]
