"""torch.load opens any tar tarfile opens, magic or not; the sniff wanted the ``ustar`` magic.

``torch.load`` of a file that is not a zip tries ``tarfile.open(mode="r:")`` and unpickles the
tar's ``storages`` member. ``tarfile`` needs no magic: a V7 header (checksum only) opens. The
sniff required ``ustar`` at 257, so such a file was *skipped* in a folder (the folder CLEAN) and,
as a checkpoint's tensor storage (tar was not among the formats a storage is tried as), never
read. The sniff is now tarfile's own first-block check (test_sniff_is_tarfiles_first_block_check).
"""

from __future__ import annotations

import io
import random
import struct
import tarfile
from pathlib import Path

import pytest

import airlock
from airlock.results import Verdict
from tests._proof import TORCH_LOAD, loader_runs_payload


def _payload(marker: Path) -> bytes:
    return b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."


def _tar(members: dict[str, bytes], *, v7: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = bytearray(buf.getvalue())
    if v7:  # every header without magic and version, checksum recomputed: a V7 tar
        at = 0
        while at + 512 <= len(raw) and raw[at : at + 512] != bytes(512):
            size = int(raw[at + 124 : at + 136].rstrip(b"\0 ") or b"0", 8)
            raw[at + 257 : at + 265] = bytes(8)
            raw[at + 148 : at + 156] = b" " * 8
            raw[at + 148 : at + 156] = b"%06o\0 " % sum(raw[at : at + 512])
            at += 512 + (size + 511) // 512 * 512
    return bytes(raw)


def _proven(raw: bytes, marker: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = tmp_path / "proof.bin"
    path.write_bytes(raw)
    loader_runs_payload(TORCH_LOAD, path, marker)


def _named(report: airlock.Report) -> list[str | None]:
    return [f.callable for f in report.findings() if f.rule == "pickle.dangerous-global"]


def test_v7_tar_is_read_whatever_its_name(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    raw = _tar({"storages": _payload(marker)}, v7=True)
    assert raw[257:262] != b"ustar"
    _proven(raw, marker, tmp_path)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "vocab.pkl").write_bytes(b"\x80\x04}\x94.")
    (folder / "state.dat").write_bytes(raw)
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    assert _named(report) == ["os.mkdir"]
    assert not report.skipped


def _storage_is_malicious(raw: bytes, tmp_path: Path) -> None:
    """``raw`` saved by torch as one tensor's storage: the scan names the payload in it."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()}, path)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    assert _named(report) == ["os.mkdir"]


@pytest.mark.parametrize("v7", [True, False], ids=["v7", "ustar"])
def test_tar_in_a_storage_is_read(tmp_path: Path, v7: bool) -> None:
    pytest.importorskip("torch")
    marker = tmp_path / "ran"
    raw = _tar({"storages": _payload(marker)}, v7=v7)
    _proven(raw, marker, tmp_path)
    _storage_is_malicious(raw, tmp_path)


@pytest.mark.parametrize("v7", [True, False], ids=["v7", "ustar"])
def test_tar_storage_that_also_starts_like_a_pickle_is_read_both_ways(tmp_path: Path, v7: bool) -> None:
    # the first member's name "N." is a whole pickle (NONE, STOP): the storage looked like a
    # pickle, was read only as one (silent: it imports nothing), and never as the tar torch.load opens
    pytest.importorskip("torch")
    from airlock._formats.pickle import looks_like_pickle

    marker = tmp_path / "ran"
    raw = _tar({"N.": b"x", "storages": _payload(marker)}, v7=v7)
    assert looks_like_pickle(raw[:4096], len(raw))
    _proven(raw, marker, tmp_path)
    _storage_is_malicious(raw, tmp_path)


def test_a_checksum_one_off_is_no_tar(tmp_path: Path) -> None:
    from airlock._formats.registry import looks_like_tar

    raw = bytearray(_tar({"storages": b"x"}, v7=True))
    assert looks_like_tar(bytes(raw))
    raw[148:156] = b"%06o\0 " % (int(raw[148:154], 8) + 1)
    assert not looks_like_tar(bytes(raw))
    path = tmp_path / "state.dat"
    path.write_bytes(bytes(raw))
    report = airlock.scan(tmp_path)
    assert [Path(s.path).name for s in report.skipped] == ["state.dat"]


def _tarfile_takes(block: bytes) -> bool:
    # the oracle: tarfile's own first checks in TarInfo.frombuf (EOF block, nti, calc_chksums)
    if block.count(0) == 512:
        return False
    try:
        stored = tarfile.nti(block[148:156])  # type: ignore[attr-defined]
    except tarfile.HeaderError:
        return False
    return stored in tarfile.calc_chksums(block)  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", [1, 2])
def test_sniff_is_tarfiles_first_block_check(seed: int) -> None:
    from airlock._formats.registry import looks_like_tar

    rng = random.Random(seed)  # noqa: S311 - seeded test data
    forms = ["%06o\0 ", "%07o\0", " %o  ", "0o%o", "%o", "+%o", "-%o", "0_%o", "\t%o\n"]
    taken = 0
    for _ in range(3000):
        block = bytearray(_tar({"x" * rng.randint(0, 99): b"abc"}, v7=rng.random() < 0.5)[:512])
        for _ in range(rng.randint(0, 4)):
            at = rng.choice([rng.randrange(512), rng.randrange(148, 156), rng.randrange(257, 265)])
            block[at] = rng.choice(
                [0, 32, 0x30 + rng.randrange(8), rng.randrange(256), 0x80, 0xFF, 0x5F, 0x6F]
            )
        if rng.random() < 0.5:
            block[148:156] = b" " * 8
            signed = 256 + sum(struct.unpack("148b8x356b", bytes(block)))
            total = sum(block) if rng.random() < 0.5 else signed
            block[148:156] = (
                (rng.choice(forms) % total).encode()[:8].ljust(8, rng.choice([b" ", b"\0", b"x"]))
            )
            if rng.random() < 0.1 and total >= 0:
                block[148:156] = b"\x80" + total.to_bytes(7, "big")
        taken += _tarfile_takes(bytes(block))
        assert looks_like_tar(bytes(block)) is _tarfile_takes(bytes(block)), bytes(block[148:156])
    assert 500 < taken < 2900  # both sides of the rule were exercised
