"""Tar archives: torch's legacy tar checkpoints (every pickle analysed) and generic tars."""

from __future__ import annotations

import contextlib
import io
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlock import scan
from airlock._formats.base import ReadContext
from airlock._formats.tar import TarReader
from airlock.errors import FormatError
from airlock.limits import DEFAULT_LIMITS
from airlock.policy import Policy
from airlock.results import Verdict
from tests.formats.helpers import assert_malicious, payload, rules, scan_one

torch = pytest.importorskip("torch")


class _MainPickler(pickle.Pickler):
    """Pickles the main object with tensors replaced by persistent ids, as torch's legacy writer did."""

    def __init__(self, file: io.BytesIO, ids: dict[int, int]) -> None:
        super().__init__(file, protocol=2)
        self.ids = ids

    def persistent_id(self, obj: object) -> str | None:
        return str(self.ids[id(obj)]) if id(obj) in self.ids else None


def _legacy_tar(state: dict[str, object], *, main: bytes | None = None, views: bytes | None = None,
                tensor_args: bytes | None = None) -> bytes:  # fmt: skip
    """A torch legacy tar checkpoint: members sys_info, pickle, tensors, storages (torch/serialization.py layout)."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    ids = {id(t): i for i, t in enumerate(tensors.values())}
    storages = io.BytesIO()
    storages.write(pickle.dumps(len(tensors), protocol=2))
    for i, t in enumerate(tensors.values()):
        storages.write(pickle.dumps((i, "cpu", torch.FloatStorage), protocol=2))
        raw = t.contiguous().numpy().tobytes()
        storages.write(struct.pack("<q", t.numel()) + raw)
    storages.write(views if views is not None else pickle.dumps([], protocol=2))
    tensor_rec = io.BytesIO()
    tensor_rec.write(pickle.dumps(len(tensors), protocol=2))
    for i, t in enumerate(tensors.values()):
        tensor_rec.write(
            tensor_args if tensor_args is not None else pickle.dumps((i, i, torch.FloatTensor), protocol=2)
        )
        tensor_rec.write(struct.pack("<i", t.dim()) + b"\x00" * 4)
        tensor_rec.write(struct.pack(f"<{t.dim()}q", *t.shape) + struct.pack(f"<{t.dim()}q", *t.stride()))
        tensor_rec.write(struct.pack("<q", 0))
    if main is None:
        buf = io.BytesIO()
        _MainPickler(buf, ids).dump(state)
        main = buf.getvalue()
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2)  # fmt: skip
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("sys_info", sys_info), ("pickle", main), ("tensors", tensor_rec.getvalue()),
                           ("storages", storages.getvalue())]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


STATE = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4), "epoch": 3}


def test_fixture_is_what_torch_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.tar"
    path.write_bytes(_legacy_tar(STATE))
    loaded = torch.load(path, weights_only=False)  # a file we built, benign: proves the layout is torch's
    assert (
        loaded["epoch"] == 3 and torch.equal(loaded["w"], STATE["w"]) and torch.equal(loaded["b"], STATE["b"])
    )


def test_benign_legacy_tar_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "legacy.tar"
    path.write_bytes(_legacy_tar(STATE))
    report = scan_one(path)
    assert report.format == "tar"
    # The legacy tensor records name the tensor class (torch.FloatTensor), which the default torch
    # profile does not list yet (reported to the policy owner); with it allowed the file is CLEAN.
    assert {(f.rule, f.callable) for f in report.findings} <= {("pickle.unknown-global", "torch.FloatTensor")}
    allowed = scan(path, policy=Policy(allow=frozenset({"torch.FloatTensor"}))).files[0]
    assert allowed.verdict is Verdict.CLEAN, allowed.findings


@pytest.mark.parametrize("where", ["main", "views", "tensor_args"])
def test_payload_in_any_legacy_pickle(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.tar"
    path.write_bytes(_legacy_tar(STATE, **{where: payload(marker)}))
    assert_malicious(scan_one(path), "system", marker)


def test_legacy_tar_payload_is_real(tmp_path: Path) -> None:
    """In a throwaway process, torch.load really runs the payload in 'pickle' (so the test above is honest)."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.tar"
    path.write_bytes(_legacy_tar(STATE, main=payload(marker)))
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False)
    assert marker.exists()


def test_storage_bytes_that_look_like_opcodes_are_skipped(tmp_path: Path) -> None:
    # raw float bytes full of pickle opcodes (c = GLOBAL): read by size, never as opcodes
    evil_floats = torch.frombuffer(bytearray(b"cos\nsystem\n" + b"\x00"), dtype=torch.float32)
    path = tmp_path / "t.tar"
    path.write_bytes(_legacy_tar({"x": evil_floats.clone()}))
    report = scan(path, policy=Policy(allow=frozenset({"torch.FloatTensor"}))).files[0]
    assert report.verdict is Verdict.CLEAN, report.findings


def _tar(members: list[tarfile.TarInfo], datas: list[bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in zip(members, datas, strict=True):
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def test_generic_tar_members_are_scanned(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    link = tarfile.TarInfo("escape")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    raw = _tar([tarfile.TarInfo("readme.md"), tarfile.TarInfo("model/weights.bin"), link],
               [b"# hi\n", payload(marker), b""])  # fmt: skip
    path = tmp_path / "bundle.tar"
    path.write_bytes(raw)
    report = scan_one(path)
    assert_malicious(report, "system", marker)
    assert "tar.link-escape" in rules(report)
    assert any(f.location.members == ("model/weights.bin",) for f in report.findings if f.callable)


def test_duplicate_members(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    raw = _tar([tarfile.TarInfo("a.pkl"), tarfile.TarInfo("a.pkl")], [payload(marker), b"\x80\x02N."])
    path = tmp_path / "dup.tar"
    path.write_bytes(raw)
    report = scan_one(path)
    assert "tar.duplicate-name" in rules(report)
    assert_malicious(report, "system", marker)


def _read(raw: bytes) -> list[object]:
    ctx = ReadContext(limits=DEFAULT_LIMITS, file_path=Path("x.tar"), root=Path())
    return list(TarReader().read(memoryview(raw), ctx))


def test_malformed_tars() -> None:
    good = _legacy_tar(STATE)
    with pytest.raises(FormatError, match="tar: unexpected end of data"):
        _read(good[:2000])
    with pytest.raises(FormatError, match="ends before its storage views pickle"):
        _read(_legacy_tar(STATE, views=b""))
    record = pickle.dumps((0, "cpu", torch.FloatStorage), protocol=2)
    storages = pickle.dumps(1, protocol=2) + record + struct.pack("<q", 1000) + b"\x00" * 8
    raw = _tar([tarfile.TarInfo(n) for n in ("pickle", "tensors", "storages")],
               [b"\x80\x02N.", pickle.dumps(0, protocol=2), storages])  # fmt: skip
    with pytest.raises(FormatError, match=r"1000 elements of 4 bytes from offset .* run past the end"):
        _read(raw)
    record = pickle.dumps((0, "cpu", torch.nn.Linear), protocol=2)
    raw = _tar([tarfile.TarInfo(n) for n in ("pickle", "tensors", "storages")],
               [b"\x80\x02N.", pickle.dumps(0, protocol=2), pickle.dumps(1, protocol=2) + record])  # fmt: skip
    with pytest.raises(FormatError, match="storage type None is not a known torch storage class"):
        _read(raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=6),
    cut=st.integers(0, 12_000),
)
def test_mangled_tars_only_raise_format_error(flips: list[tuple[int, int]], cut: int) -> None:
    raw = bytearray(_SEED)
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(FormatError):
            _read(candidate)


_SEED = _legacy_tar(STATE)
