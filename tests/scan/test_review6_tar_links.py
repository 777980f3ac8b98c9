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


# Outside review 7: torch.load opens the extracted "tensors" by path, so a *symbolic* link
# tensors -> storages reads the extracted storages file with the tensors layout, whose records
# hold a pickle.load at a place of the attacker's choosing; and "pickle" is read with
# tarfile.extractfile, which reads a symbolic link as its target member in the archive.


def _tensors_layout_payload(marker: Path) -> bytes:
    """One file that is a valid ``storages`` file (two byte storages) and, read again as
    ``tensors``, reaches the payload: the second storage's raw bytes are the tensors reading's
    sizes, strides, offset and then a pickle."""
    n = 16
    head = pickle.dumps(2, protocol=2)
    first = b"(Vcpu\nVcpu\nctorch\nByteStorage\ntp0\n." + struct.pack("<q", n)
    first_raw = struct.pack("<q", 0) + struct.pack("<q", 1)
    second = b"(Vk2\nVcpu\nctorch\nByteStorage\ntp0\n."
    fill = 8 * n - (len(first_raw) + len(second) + 8)
    second_raw = b"\x01" * fill + struct.pack(f"<{n}q", *([1] * n)) + struct.pack("<q", 0) + _payload(marker)
    views = pickle.dumps([], protocol=2)
    return head + first + first_raw + second + struct.pack("<q", len(second_raw)) + second_raw + views


def _members(entries: list[tuple[str, bytes | str]]) -> bytes:
    """A PAX tar of regular members (bytes) and symbolic links (str: the link's target), in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@pytest.mark.parametrize(
    "build",
    [
        # tensors -> storages: read from disk, after storages was extracted
        lambda m: [
            ("storages", _tensors_layout_payload(m)),
            ("tensors", "storages"),
            ("pickle", pickle.dumps({})),
        ],
        # the same, the link's target spelled with a folder step
        lambda m: [
            ("storages", _tensors_layout_payload(m)),
            ("tensors", "./storages"),
            ("pickle", pickle.dumps({})),
        ],
        # pickle -> another member: extractfile reads the member the link names, anywhere in the archive
        lambda m: [
            ("storages", pickle.dumps(0) + pickle.dumps([])),
            ("tensors", pickle.dumps(0)),
            ("pickle", "p"),
            ("p", _payload(m)),
        ],
    ],
    ids=["tensors-to-storages", "tensors-to-dot-storages", "pickle-to-member"],
)
def test_a_symbolic_link_torch_load_reads_through_is_read_as_its_target(
    tmp_path: Path, build: object
) -> None:
    marker = tmp_path / "ran"
    raw = _members(build(marker))  # type: ignore[operator]
    _proven(raw, marker, tmp_path)
    path = tmp_path / "model.tar"
    path.write_bytes(raw)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    # named once per reading of its bytes (the member itself, and the legacy name read through it)
    assert {f.callable for f in report.findings() if f.rule == "pickle.dangerous-global"} == {"os.mkdir"}


def test_a_symbolic_link_to_a_legacy_file_not_yet_extracted_reads_nothing(tmp_path: Path) -> None:
    # storages -> tensors: tensors is extracted after storages is opened, so torch.load finds no
    # file there; the reader does not read tensors' bytes as storages either (near miss)
    marker = tmp_path / "ran"
    raw = _members([("storages", "tensors"), ("tensors", _tensors_layout_payload(marker)), ("pickle", b"N.")])
    path = tmp_path / "model.tar"
    path.write_bytes(raw)
    report = airlock.scan(path)
    assert report.verdict is not Verdict.CLEAN
    assert not any(
        "storages" in f.location.members for f in report.findings() if f.rule == "pickle.dangerous-global"
    )
