"""One end record, two central directories: torch (miniz) reads the directory at the offset the
record gives, zipfile the one that ends at the record (shifting member offsets by the difference).
Each reading is proven with the real reader in a subprocess; airlock analyses both."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.results import Verdict
from tests.formats.helpers import assert_malicious, payload, rebuild_zip, rules, scan_one

torch = pytest.importorskip("torch")

_TORCH = "import sys, torch\nprint(torch.load(sys.argv[1], weights_only=False))\n"
_ZIPFILE = (
    "import pickle, sys, zipfile\n"
    "with zipfile.ZipFile(sys.argv[1]) as z:\n"
    "    print(pickle.loads(z.read('archive/data.pkl')))\n"
)


def _checkpoint(who: str, main: bytes | None = None) -> bytes:
    out = io.BytesIO()
    torch.save({"who": who}, out)
    raw = out.getvalue()
    return raw if main is None else rebuild_zip(raw, {"archive/data.pkl": main})


def _split(raw: bytes) -> tuple[bytes, bytes]:
    eocd = raw.rindex(b"PK\x05\x06")
    size, offset = struct.unpack_from("<II", raw, eocd + 12)
    return raw[:offset], raw[offset : offset + size]


def _rebase(directory: bytes, delta: int) -> bytes:
    out = bytearray(directory)
    pos = 0
    while pos < len(out):
        nlen, elen, clen = struct.unpack_from("<HHH", out, pos + 28)
        (offset,) = struct.unpack_from("<I", out, pos + 42)
        struct.pack_into("<I", out, pos + 42, offset + delta)
        pos += 46 + nlen + elen + clen
    return bytes(out)


def two_directories(for_torch: bytes, for_zipfile: bytes) -> bytes:
    """[torch's members][zipfile's members][torch's directory][zipfile's directory][end record].

    The end record gives torch's directory offset and zipfile's directory size; zipfile's member
    offsets are written minus the shift zipfile will add."""
    locals_t, dir_t = _split(for_torch)
    locals_z, dir_z = _split(for_zipfile)
    body = locals_t + locals_z + dir_t
    cd_offset = len(locals_t) + len(locals_z)
    shift = len(body) - cd_offset
    count = struct.unpack_from("<H", for_torch, for_torch.rindex(b"PK\x05\x06") + 10)[0]
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(dir_z), cd_offset, 0)
    return body + _rebase(dir_z, len(locals_t) - shift) + end


def _run(code: str, path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=False, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_torch_reads_one_directory_and_zipfile_the_other(tmp_path: Path) -> None:
    path = tmp_path / "two.pt"
    path.write_bytes(two_directories(_checkpoint("torch"), _checkpoint("zipfile")))
    assert "'who': 'torch'" in _run(_TORCH, path)
    assert "'who': 'zipfile'" in _run(_ZIPFILE, path)
    report = scan_one(path)
    assert "zip.two-directories" in rules(report)
    assert report.verdict is Verdict.SUSPICIOUS, report
    (finding,) = [f for f in report.findings if f.rule == "zip.two-directories"]
    assert "torch (miniz) reads it" in finding.message and "different archives" in finding.message


def test_payload_only_in_torchs_directory(tmp_path: Path) -> None:
    proof_marker = tmp_path / "proof"
    proof = tmp_path / "proof.pt"
    proof.write_bytes(two_directories(_checkpoint("t", payload(proof_marker)), _checkpoint("zipfile")))
    _run(_TORCH, proof)
    assert proof_marker.exists()
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(two_directories(_checkpoint("t", payload(marker)), _checkpoint("zipfile")))
    assert "'who': 'zipfile'" in _run(_ZIPFILE, path)  # zipfile's reading is harmless
    report = scan_one(path)
    assert_malicious(report, "system", marker)
    assert "zip.two-directories" in rules(report)


def test_payload_only_in_zipfiles_directory(tmp_path: Path) -> None:
    proof_marker = tmp_path / "proof"
    proof = tmp_path / "proof.pt"
    proof.write_bytes(two_directories(_checkpoint("torch"), _checkpoint("z", payload(proof_marker))))
    _run(_ZIPFILE, proof)
    assert proof_marker.exists()
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(two_directories(_checkpoint("torch"), _checkpoint("z", payload(marker))))
    assert "'who': 'torch'" in _run(_TORCH, path)  # torch's reading is harmless
    report = scan_one(path)
    assert_malicious(report, "system", marker)
    assert "zip.two-directories" in rules(report)


def test_bytes_before_an_archive_keep_the_prefix_explanation(tmp_path: Path) -> None:
    path = tmp_path / "prefixed.zip"
    path.write_bytes(b"PK\x03\x04 not a member" + _checkpoint("x"))
    report = scan_one(path)
    (finding,) = [f for f in report.findings if f.rule == "zip.prefix"]
    assert "torch (miniz) cannot list it" in finding.message, finding.message
    assert "zip.two-directories" not in rules(report)


def test_torchs_directory_shorter_than_the_size_the_record_gives(tmp_path: Path) -> None:
    # zipfile's directory (the size the end record gives) is longer than torch's: miniz reads the
    # counted entries and stops; the bytes after them (the start of zipfile's directory) must not
    # make airlock drop torch's reading.
    bigger = rebuild_zip(_checkpoint("zipfile"), {}, add=[("archive/extra/notes.txt", b"x" * 40)])
    proof_marker = tmp_path / "proof"
    proof = tmp_path / "proof.pt"
    proof.write_bytes(two_directories(_checkpoint("t", payload(proof_marker)), bigger))
    _run(_TORCH, proof)
    assert proof_marker.exists()
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(two_directories(_checkpoint("t", payload(marker)), bigger))
    report = scan_one(path)
    assert_malicious(report, "system", marker)
    assert "zip.two-directories" in rules(report)
