"""The shared zip directory parser: faithful listing, every differential an issue, bounded errors."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from airlock._formats.zip import ZipListing, member_bytes, member_head, parse_zip
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS
from tests.formats.zipcraft import Entry, build_zip


def _parse(raw: bytes) -> ZipListing:
    return parse_zip(memoryview(raw), DEFAULT_LIMITS)


def _rules(listing: ZipListing) -> list[str]:
    return [issue.rule for issue in listing.issues]


def test_agrees_with_zipfile_on_a_well_formed_archive() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/stored.bin", b"x" * 100, compress_type=zipfile.ZIP_STORED)
        zf.writestr("a/deflated.txt", b"hello " * 200, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("b/", b"")
    raw = buf.getvalue()
    listing = _parse(raw)
    assert listing.issues == ()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        infos = zf.infolist()
        assert [m.name for m in listing.members] == [i.filename for i in infos]
        for member, info in zip(listing.members, infos, strict=True):
            assert member.header_offset == info.header_offset
            assert member.compressed_size == info.compress_size
            assert bytes(member_bytes(listing, member, DEFAULT_LIMITS)) == zf.read(info)
    assert listing.members[2].is_dir
    assert member_head(listing, listing.members[1], 5) == b"hello"


def test_torch_archive_data_offsets_match_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.arange(10, dtype=torch.float32)}, path)
    raw = path.read_bytes()
    listing = _parse(raw)
    # Data descriptors and torch's alignment padding are accounted for: no gaps, no differentials.
    assert listing.issues == ()
    reader = torch._C.PyTorchFileReader(str(path))
    for member in listing.members:
        record = member.name.split("/", 1)[1]
        assert member.data_offset == reader.get_record_offset(record)
        assert bytes(member_bytes(listing, member, DEFAULT_LIMITS)) == bytes(reader.get_record(record))


def test_zip64_directory_is_read() -> None:
    raw = build_zip([Entry(b"m/a", b"abc", zip64=True), Entry(b"m/b", b"defg")], zip64=True)
    listing = _parse(raw)
    assert listing.issues == ()
    assert [(m.name, m.uncompressed_size) for m in listing.members] == [("m/a", 3), ("m/b", 4)]
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert zf.read("m/a") == b"abc"
    assert bytes(member_bytes(listing, listing.members[0], DEFAULT_LIMITS)) == b"abc"


@pytest.mark.parametrize("bits", [0x1, 0x20, 0x40, 0x2000, 0x4000])
def test_flag_bits_are_reported_and_data_still_read(bits: int) -> None:
    raw = build_zip([Entry(b"m/config.pkl", b"payload", flags=bits)])
    listing = _parse(raw)
    assert _rules(listing) == ["zip.flag-bits"]
    assert f"0x{bits:x}" in listing.issues[0].message
    assert bytes(member_bytes(listing, listing.members[0], DEFAULT_LIMITS)) == b"payload"


def test_local_only_flag_bits_are_reported() -> None:
    listing = _parse(build_zip([Entry(b"m/x", b"data", local_flags=0x1)]))
    assert _rules(listing) == ["zip.flag-bits"]
    assert "local 0x0001" in listing.issues[0].message


def test_name_mismatch_is_reported_where_zipfile_refuses() -> None:
    raw = build_zip([Entry(b"data.pkl", b"payload", local_name=b"datap.kl")])
    listing = _parse(raw)
    assert _rules(listing) == ["zip.name-mismatch"]
    with zipfile.ZipFile(io.BytesIO(raw)) as zf, pytest.raises(zipfile.BadZipFile, match="differ"):
        zf.read("data.pkl")
    assert bytes(member_bytes(listing, listing.members[0], DEFAULT_LIMITS)) == b"payload"


def test_header_mismatch_method_and_sizes() -> None:
    listing = _parse(build_zip([Entry(b"m/x", b"data", local_method=8, crc=None)]))
    assert _rules(listing) == ["zip.header-mismatch"]
    raw = bytearray(build_zip([Entry(b"m/x", b"data")]))
    struct.pack_into("<I", raw, 14, 0xDEADBEEF)  # local CRC only
    assert _rules(_parse(bytes(raw))) == ["zip.header-mismatch"]


def test_duplicates_exact_and_case_only_are_reported() -> None:
    listing = _parse(build_zip([Entry(b"m/data.pkl", b"one"), Entry(b"m/data.pkl", b"two")]))
    assert _rules(listing) == ["zip.duplicate-name"]
    assert [bytes(member_bytes(listing, m, DEFAULT_LIMITS)) for m in listing.find("m/data.pkl")] == [
        b"one",
        b"two",
    ]
    listing = _parse(build_zip([Entry(b"m/data.pkl", b"one"), Entry(b"m/DATA.PKL", b"two")]))
    assert _rules(listing) == ["zip.duplicate-name"]
    assert "differing only in case" in listing.issues[0].message
    assert len(listing.find("m/Data.pkl", case_insensitive=True)) == 2
    assert listing.find("m/Data.pkl") == ()


def test_two_entries_sharing_one_local_header_overlap() -> None:
    listing = _parse(build_zip([Entry(b"m/a", b"data"), Entry(b"m/b", b"data", same_local_as=0)]))
    assert "zip.overlap" in _rules(listing)


def test_hidden_local_header_in_a_gap_is_named() -> None:
    hidden = build_zip([Entry(b"evil.pkl", b"payload")])
    hidden_local = hidden[: hidden.index(b"PK\x01\x02")]
    listing = _parse(
        build_zip([Entry(b"m/a", b"data", before=b""), Entry(b"m/b", b"x", before=hidden_local)])
    )
    assert _rules(listing) == ["zip.gap"]
    assert "evil.pkl" in listing.issues[0].message
    assert listing.issues[0].offset == 30 + 3 + 4


def test_trailing_bytes_after_the_end_record_are_a_gap() -> None:
    listing = _parse(build_zip([Entry(b"m/a", b"data")], trailing=b"junk"))
    assert _rules(listing) == ["zip.gap"]
    assert "4 bytes" in listing.issues[0].message


def test_comment_is_not_a_gap() -> None:
    listing = _parse(build_zip([Entry(b"m/a", b"data")], comment=b"a comment"))
    assert listing.issues == ()
    assert listing.comment == b"a comment"


def test_entry_count_differential() -> None:
    listing = _parse(build_zip([Entry(b"m/a", b"1"), Entry(b"m/b", b"2")], declared_count=1))
    assert _rules(listing) == ["zip.entry-count"]
    assert len(listing.members) == 2  # what zipfile sees: both are analysed


def test_prefix_shifts_offsets_like_zipfile() -> None:
    raw = build_zip([Entry(b"m/a", b"data")], prefix=b"#!/bin/sh\n")
    listing = _parse(raw)
    assert _rules(listing) == ["zip.prefix"]
    assert listing.prefix == 10
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert zf.read("m/a") == bytes(member_bytes(listing, listing.members[0], DEFAULT_LIMITS))


def test_zip64_values_disagreeing_with_end_record() -> None:
    raw = bytearray(build_zip([Entry(b"m/a", b"abc")], zip64=True))
    eocd = raw.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", raw, eocd + 8, 7, 7)  # non-saturated, wrong counts
    listing = _parse(bytes(raw))
    assert set(_rules(listing)) == {"zip.zip64-mismatch"}


def test_bad_utf8_name() -> None:
    listing = _parse(build_zip([Entry(b"m/\xff", b"x", flags=0x800)]))
    assert _rules(listing) == ["zip.bad-name"]


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda raw: raw[:-22] + b"\x00" * 22, FormatError, "no zip end of central directory record"),
        (lambda raw: b"PK", FormatError, "too short for a zip end record"),
        (lambda raw: _patch(raw, -6, "<I", 9000), FormatError, r"offset 9000 \+ size \d+ runs past"),
        (lambda raw: _patch(raw, -10, "<I", 90000), FormatError, "central directory size 90000 is larger"),
        (lambda raw: _patch(raw, -2, "<H", 50), FormatError, "comment length 50 runs past the end"),
        (lambda raw: _patch(raw, -18, "<H", 1), FormatError, "multi-disk archive"),
        (
            lambda raw: raw.replace(b"PK\x03\x04", b"PK\x03\x05", 1),
            FormatError,
            "no local header signature at offset 0",
        ),
        (lambda raw: raw.replace(b"PK\x01\x02", b"PK\x01\x03", 1), FormatError, "bad signature"),
        (
            lambda raw: _patch_central(raw, 42, "<I", 5000),
            FormatError,
            "local header offset 5000 is past the end",
        ),
        (
            lambda raw: _patch_central(raw, 20, "<I", 3000),
            FormatError,
            r"data \(3000 bytes from offset 33\) runs past",
        ),
        (lambda raw: _patch_central(raw, 20, "<I", 0xFFFFFFFF), FormatError, "no zip64 extra field"),
        (lambda raw: _patch_central(raw, 28, "<H", 400), FormatError, "run past the end of the directory"),
    ],
)
def test_malformed_archives_raise_named_errors(mutate: object, error: type[Exception], match: str) -> None:
    raw = build_zip([Entry(b"m/a", b"data")])
    assert callable(mutate)
    with pytest.raises(error, match=match):
        _parse(mutate(raw))


def _patch(raw: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, at % len(raw), value)
    return bytes(out)


def _patch_central(raw: bytes, field: int, fmt: str, value: int) -> bytes:
    return _patch(raw, raw.index(b"PK\x01\x02") + field, fmt, value)


def test_entry_limit_is_checked_before_reading() -> None:
    raw = build_zip([Entry(b"m/%d" % i, b"") for i in range(5)])
    with pytest.raises(LimitError, match="declares 5 entries, more than 4"):
        parse_zip(memoryview(raw), DEFAULT_LIMITS.replace(max_archive_members=4))


def test_deflate_bomb_is_a_limit_error() -> None:
    raw = build_zip([Entry(b"m/bomb", b"\x00" * 10_000_000, method=8)])
    listing = _parse(raw)
    assert len(member_bytes(listing, listing.members[0], DEFAULT_LIMITS)) == 10_000_000  # below the floor
    with pytest.raises(LimitError, match="a ratio above 1000"):
        member_bytes(listing, listing.members[0], DEFAULT_LIMITS.replace(compression_ratio_floor=1_000_000))
    with pytest.raises(LimitError, match="declares 10000000 bytes uncompressed, more than 1000"):
        member_bytes(listing, listing.members[0], DEFAULT_LIMITS.replace(max_decompressed_bytes=1000))


def test_deflate_that_lies_about_its_size() -> None:
    listing = _parse(build_zip([Entry(b"m/x", b"y" * 5000, method=8, uncompressed_size=100)]))
    with pytest.raises(LimitError, match="inflates past its declared size 100"):
        member_bytes(listing, listing.members[0], DEFAULT_LIMITS)
    listing = _parse(build_zip([Entry(b"m/x", b"y" * 50, method=8, uncompressed_size=100)]))
    with pytest.raises(FormatError, match="ends after 50 of 100 bytes"):
        member_bytes(listing, listing.members[0], DEFAULT_LIMITS)


def test_corrupt_deflate_and_unknown_method() -> None:
    raw = build_zip([Entry(b"m/x", b"\xff" * 20, method=0)])
    raw = _patch_central(raw, 10, "<H", 8)
    raw = raw.replace(b"PK\x03\x04\x14\x00\x00\x00\x00\x00", b"PK\x03\x04\x14\x00\x00\x00\x08\x00", 1)
    listing = _parse(raw)
    with pytest.raises(FormatError, match="deflate stream is corrupt"):
        member_bytes(listing, listing.members[0], DEFAULT_LIMITS)
    listing = _parse(build_zip([Entry(b"m/x", b"abc", method=93)]))
    with pytest.raises(FormatError, match=r"unsupported compression method 93 \(zstd\)"):
        member_bytes(listing, listing.members[0], DEFAULT_LIMITS)


def test_stored_member_with_inconsistent_sizes() -> None:
    listing = _parse(build_zip([Entry(b"m/x", b"abc", uncompressed_size=9)]))
    with pytest.raises(FormatError, match="compressed size 3 differs from uncompressed size 9"):
        member_bytes(listing, listing.members[0], DEFAULT_LIMITS)


def test_bad_crc_is_visible_to_callers() -> None:
    listing = _parse(build_zip([Entry(b"m/x", b"abc", crc=1)]))
    member = listing.members[0]
    assert zlib.crc32(member_bytes(listing, member, DEFAULT_LIMITS)) != member.crc32


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("ARCHIVE/Data.PKL", "archive/data.pkl"),
        ("Z@[`{", "z@[`{"),  # the neighbours of A-Z and a-z stay
        ("ÉCOLE/Data.pkl", "École/data.pkl"),  # miniz folds ASCII letters only; str.lower() would fold É
        ("K", "k"),  # the Kelvin sign: lower() makes it "k"; miniz leaves it
        ("İ", "İ"),  # lower() makes it two code points
    ],
)
def test_fold_is_miniz_ascii_only_tolower(name: str, folded: str) -> None:
    from airlock._formats.zip_model import fold

    assert fold(name) == folded
    assert fold(name) == "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in name)
