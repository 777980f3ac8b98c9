"""A file one reader claims that torch.load opens as a tar is read as a tar too.

``torch.load`` reads any file that does not start with ``PK\\x03\\x04`` as a tar when ``tarfile``
opens it, and unpickles its ``storages`` member. The scan read a file only as the first format
whose sniff took it (plus the polyglot pickle reading). An ``.npy`` whose header ends at byte 100,
inside the first tar header (the rest of it, and the tar, are the array's uint8 data), or a
safetensors file whose single U8 tensor holds the tar, was CLEAN while ``torch.load`` ran the
``storages`` pickle. Tar is the one reading besides pickle with no magic of its own, so content
any other reader claims is read as a tar too when tarfile would open it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import airlock
from airlock.results import Verdict


def _payload(marker: Path) -> bytes:
    return b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."


def _tar_with_storages(payload: bytes) -> bytearray:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("p", b""), ("storages", payload)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return bytearray(buf.getvalue())


def _sum_fixed(raw: bytearray) -> bytes:
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    return bytes(raw)


def npy_tar(payload: bytes) -> bytes:
    raw = _tar_with_storages(payload)
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({len(raw) - 100},), }}".encode()
    header = text.ljust(89) + b"\n"
    raw[0:100] = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    return _sum_fixed(raw)


def safetensors_tar(payload: bytes) -> bytes:
    raw = _tar_with_storages(payload)
    span = len(raw) - 100
    entry = {"t": {"dtype": "U8", "shape": [span], "data_offsets": [0, span]}}
    header = json.dumps(entry, separators=(",", ":")).encode().ljust(92)
    raw[0:100] = len(header).to_bytes(8, "little") + header
    return _sum_fixed(raw)


_OTHER_LOADER = {
    "npy": "import numpy, sys; assert numpy.load(sys.argv[1]).dtype == numpy.uint8",
    "safetensors": "import sys; from safetensors import safe_open; assert list(safe_open(sys.argv[1], 'np').keys()) == ['t']",
}


@pytest.mark.parametrize(
    ("kind", "build", "name"),
    [("npy", npy_tar, "model.pt"), ("safetensors", safetensors_tar, "pytorch_model.bin")],
)
def test_polyglot_that_torch_load_opens_as_a_tar(tmp_path: Path, kind: str, build: object, name: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors" if kind == "safetensors" else "numpy")
    assert callable(build)
    marker = tmp_path / "ran"
    path = tmp_path / name
    path.write_bytes(build(_payload(marker)))
    # a true polyglot: its own format's loader reads it as that format ...
    subprocess.run(
        [sys.executable, "-c", _OTHER_LOADER[kind], path], check=True, timeout=120, capture_output=True
    )
    # ... and torch.load opens it as a tar and runs the storages pickle
    load = "import torch, sys\ntry: torch.load(sys.argv[1], weights_only=False)\nexcept Exception: pass"
    subprocess.run([sys.executable, "-c", load, path], check=True, timeout=120, capture_output=True)
    assert marker.is_dir(), "torch.load did not run the payload"
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    found = [(f.rule, f.callable, f.location.members) for f in report.findings()]
    assert ("pickle.dangerous-global", "os.mkdir", ("as torch.load reads it (a tar)", "storages")) in found
    assert report.files[0].format == kind


@pytest.mark.parametrize("build", [npy_tar, safetensors_tar], ids=["npy", "safetensors"])
def test_same_bytes_without_a_valid_tar_checksum_stay_clean(tmp_path: Path, build: object) -> None:
    assert callable(build)
    raw = bytearray(build(b"N."))
    raw[148:156] = b"%06o\0 " % (int(raw[148:154], 8) + 1)  # tarfile refuses the first header
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(raw))
    report = airlock.scan(path)
    assert report.verdict is Verdict.CLEAN, [(f.rule, f.message) for f in report.findings()]
