"""Outside review 6: torch.load's legacy tar reading extracts ``storages``, ``tensors`` and
``pickle`` with ``tarfile.extract``, which writes a *hard link* member as the member it links to.
A tar whose three names were hard links to one regular member ``s`` was therefore a torch legacy
checkpoint to torch.load, which ran the pickles in ``s`` one after another (the storage records,
with raw bytes between them); the reader took it for a plain tar, read ``s`` as one pickle file,
stopped at the raw bytes and never saw the record after them: SUSPICIOUS (links, trailing data),
no MALICIOUS finding, for a file torch.load runs code from."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import pytest

import airlock
from airlock.results import Verdict
from tests._proof import TORCH_LOAD, loader_runs_payload

# a legacy storage record: (key, location, storage class), then int64 element count and raw bytes
_RECORD = b"\x80\x02(X\x01\x00\x00\x000X\x03\x00\x00\x00cpuctorch\nFloatStorage\nt."
_RAW = struct.pack("<q", 4) + b"\xff" * 16  # 4 float32 elements; 0xff is no pickle opcode


def _payload(marker: Path) -> bytes:
    return b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."


def _storages(marker: Path) -> bytes:
    # two storages: the first a real record, the second's record is the payload
    return pickle.dumps(2, protocol=2) + _RECORD + _RAW + _payload(marker)


def _tar(marker: Path, links: dict[str, str], kind: bytes = tarfile.LNKTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = _storages(marker)
        info = tarfile.TarInfo("s")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            link = tarfile.TarInfo(name)
            link.type = kind
            link.linkname = target
            tar.addfile(link)
    return buf.getvalue()


def _proven(raw: bytes, marker: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = tmp_path / "proof.tar"
    path.write_bytes(raw)
    loader_runs_payload(TORCH_LOAD, path, marker)


@pytest.mark.parametrize(
    "links",
    [
        {"storages": "s", "tensors": "s", "pickle": "s"},
        # a link to a link, and a target named as tarfile normalises it ("./s")
        {"a": "s", "storages": "a", "tensors": "./s", "pickle": "s"},
    ],
    ids=["links", "chain"],
)
def test_legacy_names_that_are_hard_links_are_read_as_torch_reads_them(
    tmp_path: Path, links: dict[str, str]
) -> None:
    marker = tmp_path / "ran"
    raw = _tar(marker, links)
    _proven(raw, marker, tmp_path)
    path = tmp_path / "model.tar"
    path.write_bytes(raw)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    found = [
        (f.callable, f.location.members) for f in report.findings() if f.rule == "pickle.dangerous-global"
    ]
    assert ("os.mkdir", ("storages",)) in found, found


def test_a_symbolic_link_is_not_read_as_its_target(tmp_path: Path) -> None:
    # tarfile.extract writes a symbolic link as a link (dangling in torch's temporary folder), not
    # its target's data: torch.load runs nothing, and the reader does not read s as storages either
    marker = tmp_path / "ran"
    path = tmp_path / "model.tar"
    path.write_bytes(_tar(marker, dict.fromkeys(("storages", "tensors", "pickle"), "s"), tarfile.SYMTYPE))
    report = airlock.scan(path)
    assert report.verdict is not Verdict.CLEAN
    assert not any(
        "storages" in f.location.members for f in report.findings() if f.rule == "pickle.dangerous-global"
    )
