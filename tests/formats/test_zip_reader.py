"""The zip reader end to end: torch archives, differentials as regressions, generic zips, bombs."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import pytest

from airlock import scan
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Verdict
from tests.formats.helpers import assert_malicious, payload, rebuild_zip, rules, scan_one
from tests.formats.zipcraft import Entry, build_zip

torch = pytest.importorskip("torch")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "step": 3}, path)
    return path


def _write(tmp_path: Path, name: str, raw: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def test_torch_checkpoint_is_clean(checkpoint: Path) -> None:
    report = scan_one(checkpoint)
    assert report.verdict is Verdict.CLEAN, report.findings
    assert report.format is not None and report.format.startswith("zip")


def test_payload_in_data_pkl(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    raw = rebuild_zip(checkpoint.read_bytes(), {"model/data.pkl": payload(marker)})
    report = scan_one(_write(tmp_path, "evil.pt", raw))
    assert_malicious(report, "system", marker)


@pytest.mark.parametrize("position", ["first", "last"])
def test_duplicate_data_pkl_every_copy_is_analysed(checkpoint: Path, tmp_path: Path, position: str) -> None:
    marker = tmp_path / "marker"
    raw = checkpoint.read_bytes()
    entries: list[Entry] = []
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        for info in zf.infolist():
            entries.append(Entry(info.filename.encode(), zf.read(info)))
    evil = Entry(b"model/data.pkl", payload(marker))
    entries = [evil, *entries] if position == "first" else [*entries, evil]
    report = scan_one(_write(tmp_path, "dup.pt", build_zip(entries)))
    assert "zip.duplicate-name" in rules(report)
    assert_malicious(report, "system", marker)


def test_torch_does_not_simply_read_the_first_duplicate(checkpoint: Path) -> None:
    """Why every copy is analysed: torch's pick among duplicates depends on the directory layout."""
    import pickle

    with zipfile.ZipFile(checkpoint) as zf:
        others = [(i.filename, zf.read(i)) for i in zf.infolist() if i.filename != "model/data.pkl"]

    def build(extra: int) -> bytes:
        entries = [Entry(b"model/data.pkl", pickle.dumps({"copy": 1}, protocol=2))]
        entries += [Entry(name.encode(), data) for name, data in others]
        entries += [Entry(b"model/data.pkl", pickle.dumps({"copy": 2}, protocol=2))]
        entries += [Entry(b"model/pad%d" % k, b"x") for k in range(extra)]
        return build_zip(entries)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        picked = {torch.load(io.BytesIO(build(extra)), weights_only=True)["copy"] for extra in range(6)}
    assert picked == {1, 2}


def test_case_variant_of_data_pkl_is_the_main_pickle(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    raw = rebuild_zip(checkpoint.read_bytes(), {})
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        entries = [
            Entry(b"model/DATA.PKL" if i.filename == "model/data.pkl" else i.filename.encode(),
                  payload(marker) if i.filename == "model/data.pkl" else zf.read(i))
            for i in zf.infolist()
        ]  # fmt: skip
    report = scan_one(_write(tmp_path, "case.pt", build_zip(entries)))
    assert_malicious(report, "system", marker)


def test_storage_that_is_a_pickle_payload_is_reported(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    raw = rebuild_zip(checkpoint.read_bytes(), {"model/data/0": payload(marker)})
    assert_malicious(scan_one(_write(tmp_path, "s.pt", raw)), "system", marker)


def test_storage_bytes_that_merely_start_like_a_pickle_are_not_an_error(
    checkpoint: Path, tmp_path: Path
) -> None:
    junk = b"\x80\x02" + bytes(range(256)) * 4
    raw = rebuild_zip(checkpoint.read_bytes(), {"model/data/0": junk})
    report = scan_one(_write(tmp_path, "junk.pt", raw))
    assert report.verdict is Verdict.CLEAN, report.findings


def test_pickle_hidden_under_another_name_is_located_at_its_member(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    raw = rebuild_zip(checkpoint.read_bytes(), {}, add=[("model/notes/readme.txt", payload(marker))])
    report = scan_one(_write(tmp_path, "hidden.pt", raw))
    assert_malicious(report, "system", marker)
    assert any(f.location.members == ("model/notes/readme.txt",) for f in report.findings if f.callable)


def test_bad_byteorder_record(checkpoint: Path, tmp_path: Path) -> None:
    raw = rebuild_zip(checkpoint.read_bytes(), {"model/byteorder": b"middle"})
    report = scan_one(_write(tmp_path, "bo.pt", raw))
    assert "torch.bad-record" in rules(report)
    assert report.verdict is not Verdict.CLEAN


# Regressions named after the picklescan advisories they reproduce: a differential between
# zipfile (what most scanners use) and torch hid a payload.


def test_cve_2025_1944_local_central_name_mismatch(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    raw = build_zip([Entry(b"archive/data.pkl", payload(marker), local_name=b"archive/datap.kl"),
                     Entry(b"archive/version", b"3\n")])  # fmt: skip
    report = scan_one(_write(tmp_path, "m.pt", raw))
    assert "zip.name-mismatch" in rules(report)
    assert_malicious(report, "system", marker)


@pytest.mark.parametrize("bits", [0x1, 0x20, 0x40])
def test_cve_2025_1945_flag_bits(tmp_path: Path, bits: int) -> None:
    marker = tmp_path / "marker"
    raw = build_zip([Entry(b"model/config.pkl", payload(marker), flags=bits)])
    with pytest.raises((RuntimeError, NotImplementedError)), zipfile.ZipFile(io.BytesIO(raw)) as zf:
        zf.read("model/config.pkl")  # zipfile-based scanners cannot read it ...
    report = scan_one(_write(tmp_path, "f.zip", raw))  # ... airlock reads it and says why
    assert "zip.flag-bits" in rules(report)
    assert_malicious(report, "system", marker)


def test_cve_2025_10156_bad_crc(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    raw = build_zip(
        [Entry(b"archive/data.pkl", payload(marker), crc=0x12345678), Entry(b"archive/version", b"3\n")]
    )
    with pytest.raises(zipfile.BadZipFile, match="Bad CRC"), zipfile.ZipFile(io.BytesIO(raw)) as zf:
        zf.read("archive/data.pkl")
    report = scan_one(_write(tmp_path, "crc.pt", raw))
    assert "zip.bad-crc" in rules(report)
    assert_malicious(report, "system", marker)


def test_generic_zip_members_are_scanned_by_content(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    raw = build_zip([Entry(b"readme.md", b"# hello\n"), Entry(b"weights.txt", payload(marker), method=8)])
    report = scan_one(_write(tmp_path, "bundle.zip", raw))
    assert_malicious(report, "system", marker)
    assert any(f.location.members == ("weights.txt",) for f in report.findings if f.callable)


def test_zip_inside_zip_is_scanned(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    inner = build_zip([Entry(b"x/data.pkl", payload(marker))])
    raw = build_zip([Entry(b"inner.zip", inner)])
    report = scan_one(_write(tmp_path, "outer.zip", raw))
    assert_malicious(report, "system", marker)
    # x/data.pkl is a torch main pickle: streams are located at their archive (the role names the member).
    assert any(f.location.members[:1] == ("inner.zip",) for f in report.findings if f.callable)


def test_deflate_bomb_member_is_an_error_not_a_crash(tmp_path: Path) -> None:
    raw = build_zip([Entry(b"bomb.bin", b"\x00" * 20_000_000, method=8)])
    path = _write(tmp_path, "bomb.zip", raw)
    report = scan(path, limits=DEFAULT_LIMITS.replace(compression_ratio_floor=1_000_000)).files[0]
    assert report.verdict is Verdict.ERROR
    assert "limit.exceeded" in rules(report)


def test_total_decompressed_limit(tmp_path: Path) -> None:
    raw = build_zip(
        [
            Entry(b"a.bin", bytes(range(256)) * 100, method=8),
            Entry(b"b.bin", bytes(range(256)) * 100, method=8),
        ]
    )
    path = _write(tmp_path, "two.zip", raw)
    report = scan(path, limits=DEFAULT_LIMITS.replace(max_total_decompressed_bytes=30_000)).files[0]
    assert any("max_total_decompressed_bytes" in f.message for f in report.findings)
    assert report.verdict is Verdict.ERROR


def test_unsupported_method_is_an_error(tmp_path: Path) -> None:
    raw = build_zip([Entry(b"a.bin", b"abc", method=93)])
    report = scan_one(_write(tmp_path, "zstd.zip", raw))
    assert report.verdict is Verdict.ERROR
    assert any("unsupported compression method 93 (zstd)" in f.message for f in report.findings)


def test_truncated_archive_is_an_error(checkpoint: Path, tmp_path: Path) -> None:
    raw = checkpoint.read_bytes()
    report = scan_one(_write(tmp_path, "cut.pt", raw[: len(raw) // 2]))
    assert report.verdict is Verdict.ERROR
