"""airlock's own zip reader: the directory as PyTorch's loader sees it, plus every differential.

**Shared API** (other readers build on it, e.g. ``.keras`` and ``.npz``): :func:`parse_zip` lists
the members, :func:`member_bytes` / :func:`member_head` give a member's bytes, bounded. Keep it
small; add fields rather than change them.

What it mirrors, and why (measured against torch 2.13 on archives built in the tests):

* The end of central directory record (EOCD) is found by a bounded backward search (the last
  22 + 65535 bytes), then the zip64 locator and record if present; the central directory's
  offset, size and entry count are checked against the file before anything is read.
* Torch (miniz in ``PyTorchStreamReader``) reads members through the central directory and
  locates the data with the *local* header's name and extra lengths; it ignores the CRC, the
  local name, method and sizes, and the local flag bits. It refuses encryption / patch bits in
  the *central* directory, as Python's ``zipfile`` does — other tools ignore them, so any such
  bit is a finding and the member is still read as plain data.
* Name lookups in torch are ASCII case-insensitive and go through a binary search over a
  heap-sorted index: with duplicate names, *which* copy torch reads depends on the number and
  order of entries (not simply the first). ``zipfile`` reads the last. Readers must therefore
  analyse every copy; :meth:`ZipListing.find` returns them all.
* ``zipfile`` rejects a local/central name mismatch, a bad CRC and encryption bits, trusts
  ``cd_size`` rather than the entry count, and shifts offsets when bytes precede the archive.

Every such disagreement, and every byte that belongs to no member, header or directory, becomes
an :class:`~airlock._formats.base.Issue` in :attr:`ZipListing.issues` (severity SUSPICIOUS).
What cannot be listed faithfully at all raises :class:`~airlock.errors.FormatError`.
"""

from __future__ import annotations

import bz2
import dataclasses
import lzma
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from airlock._formats.base import Issue
from airlock.errors import FormatError, LimitError
from airlock.limits import Limits
from airlock.results import Severity

__all__ = [
    "BZIP2",
    "COMPRESSED",
    "DEFLATED",
    "LZMA",
    "STORED",
    "ZipListing",
    "ZipMember",
    "looks_like_zip",
    "member_bytes",
    "member_head",
    "parse_zip",
]

STORED: Final = 0
DEFLATED: Final = 8
BZIP2: Final = 12
LZMA: Final = 14
#: the compression methods Python's zipfile reads (torch's miniz: deflate only)
COMPRESSED: Final = frozenset({DEFLATED, BZIP2, LZMA})
_LZMA_PROPS: Final = 5
#: (pb=4 * 5 + lp=4) * 9 + lc=8: the largest LZMA1 properties byte liblzma accepts
_LZMA_MAX_LCLPPB: Final = (4 * 5 + 4) * 9 + 8
_LZMA_MIN_DICT: Final = 4096
_DECODE_ERRORS: Final = (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError)
LOCAL_SIG: Final = b"PK\x03\x04"
_CENTRAL_SIG: Final = b"PK\x01\x02"
_EOCD_SIG: Final = b"PK\x05\x06"
_Z64_LOCATOR_SIG: Final = b"PK\x06\x07"
_Z64_EOCD_SIG: Final = b"PK\x06\x06"
_DESCRIPTOR_SIG: Final = b"PK\x07\x08"
_EOCD_SIZE: Final = 22
_CENTRAL_SIZE: Final = 46
_LOCAL_SIZE: Final = 30
_Z64_LOCATOR_SIZE: Final = 20
_Z64_EOCD_SIZE: Final = 56
_MAX_COMMENT: Final = 0xFFFF
_U16: Final = 0xFFFF
_U32: Final = 0xFFFFFFFF
#: general-purpose flag bits every reader agrees on: deflate options (1, 2), data descriptor (3), UTF-8 (11)
_ORDINARY_FLAGS: Final = 0x0002 | 0x0004 | 0x0008 | 0x0800
_FLAG_NAMES: Final = {
    0x0001: "encrypted",
    0x0010: "enhanced deflate",
    0x0020: "compressed patch",
    0x0040: "strong encryption",
    0x2000: "masked local header",
}
#: at most this many gap/overlap issues are listed per archive; the rest are summed up in one
_MAX_REGION_ISSUES: Final = 16
_METHOD_NAMES: Final = {
    8: "deflate",
    12: "bzip2",
    14: "lzma",
    93: "zstd",
    95: "xz",
    98: "ppmd",
    9: "deflate64",
}


@dataclass(frozen=True)
class ZipMember:
    """One central directory entry, checked against its local header.

    Offsets are absolute offsets into the data given to :func:`parse_zip`.
    """

    #: position in the central directory (0-based)
    index: int
    #: the central directory name, decoded as zipfile does (UTF-8 if flag bit 11, else cp437)
    name: str
    raw_name: bytes
    #: the name in the local header (torch ignores it; zipfile rejects a mismatch)
    local_name: bytes
    method: int
    #: central directory general-purpose flags (what torch and zipfile act on)
    flags: int
    local_flags: int
    crc32: int
    compressed_size: int
    uncompressed_size: int
    header_offset: int
    #: where the member's bytes start: after the local header, its name and its extra field
    data_offset: int
    #: end of the member's extent, including a data descriptor when there is one
    end: int

    @property
    def data_end(self) -> int:
        return self.data_offset + self.compressed_size

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/") and self.uncompressed_size == 0


@dataclass(frozen=True)
class ZipListing:
    """The members of one zip archive in central directory order, and the differentials found."""

    members: tuple[ZipMember, ...]
    issues: tuple[Issue, ...]
    comment: bytes
    #: bytes before the archive proper (zipfile shifts every offset by this much; torch does not)
    prefix: int
    data: memoryview = field(repr=False, compare=False)

    def find(self, name: str, *, case_insensitive: bool = False) -> tuple[ZipMember, ...]:
        """Every member called ``name`` (torch: ``case_insensitive=True``), in directory order."""
        if case_insensitive:
            key = _fold(name)
            return tuple(m for m in self.members if _fold(m.name) == key)
        return tuple(m for m in self.members if m.name == name)


class _Reading(NamedTuple):
    """Where one reader looks for the central directory, and how it shifts member offsets."""

    who: str
    start: int
    shift: int


def _readings_issue(
    prefix: int,
    cd_offset: int,
    zip_start: int,
    listed: list[tuple[_Reading, list[ZipMember], list[Issue]]],
    failed: list[tuple[_Reading, FormatError]],
    eocd: int,
) -> Issue:
    if len(listed) == 2:
        (_, torch_members, _), (_, zip_members, _) = listed
        same = {(m.name, m.data_offset) for m in torch_members} == {
            (m.name, m.data_offset) for m in zip_members
        }
        return Issue(
            "zip.two-directories",
            Severity.SUSPICIOUS,
            f"the end record puts the central directory at offset {cd_offset}, where torch (miniz) reads "
            f"it ({len(torch_members)} entries); zipfile reads the directory that ends at the record, at "
            f"offset {zip_start}, and shifts every member offset by {prefix} ({len(zip_members)} entries): "
            + ("both list the same members" if same else "the two readers see different archives")
            + "; every member of both is analysed",
            offset=eocd,
        )
    reading, exc = failed[0]
    ok = listed[0][0]
    if ok.shift and prefix > 0:
        what = f"{prefix} bytes precede the archive: zipfile shifts every offset by {prefix}"
    else:
        what = f"the directory offset {cd_offset} and the end record disagree by {prefix} bytes: {ok.who} lists it"
    return Issue(
        "zip.prefix",
        Severity.SUSPICIOUS,
        f"{what}, {reading.who} cannot list it ({exc}); the two see different content",
        offset=0,
    )


def looks_like_zip(head: bytes) -> bool:
    """A local header at offset 0 (what torch.load requires), or an empty archive's end record."""
    return head.startswith(LOCAL_SIG) or (head.startswith(_EOCD_SIG) and len(head) >= _EOCD_SIZE)


def parse_zip(data: memoryview, limits: Limits, check_time: Callable[[], None] | None = None) -> ZipListing:
    """List ``data`` as a zip archive. Raises FormatError / LimitError when it cannot be listed."""
    size = len(data)
    eocd = _find_eocd(data)
    (disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment_len) = struct.unpack_from(
        "<HHHHIIH", data, eocd + 4
    )
    issues: list[Issue] = []
    regions: list[tuple[int, int, str]] = []
    comment_end = eocd + _EOCD_SIZE + comment_len
    if comment_end > size:
        raise FormatError(
            f"end record comment length {comment_len} runs past the end of the {size}-byte file "
            f"({size - eocd - _EOCD_SIZE} bytes left)",
            offset=eocd,
        )
    regions.append((eocd, comment_end, "end of central directory record"))
    comment = bytes(data[eocd + _EOCD_SIZE : comment_end])
    directory_end = eocd
    locator = eocd - _Z64_LOCATOR_SIZE
    if locator >= 0 and _sig(data, locator) == _Z64_LOCATOR_SIG:
        z64 = _read_zip64(data, locator, regions, issues)
        directory_end = z64[4]
        saturated = (n_disk, n_total, cd_size, cd_offset)
        for name, small, big, full in zip(
            ("entries on disk", "entries", "directory size", "directory offset"),
            saturated,
            z64[:4],
            (_U16, _U16, _U32, _U32),
            strict=True,
        ):
            if small not in (full, big):
                issues.append(
                    Issue(
                        "zip.zip64-mismatch",
                        Severity.SUSPICIOUS,
                        f"end record says {name} {small}, zip64 record says {big}; "
                        "readers that skip zip64 see another archive",
                        offset=eocd,
                    )
                )
        n_disk, n_total, cd_size, cd_offset = z64[:4]
        disk = cd_disk = 0
    if disk != 0 or cd_disk != 0 or n_disk != n_total:
        raise FormatError(
            f"multi-disk archive (disk {disk}, directory disk {cd_disk}, {n_disk} of {n_total} entries "
            "on this disk) is not supported",
            offset=eocd,
        )
    if n_total > limits.max_archive_members:
        raise LimitError(
            f"archive declares {n_total} entries, more than {limits.max_archive_members} "
            "(limit max_archive_members)",
            offset=eocd,
        )
    if cd_size > directory_end:
        raise FormatError(
            f"central directory size {cd_size} is larger than the {directory_end} bytes before its end record",
            offset=eocd,
        )
    # Two readings of one end record. torch (miniz) reads the directory at the offset the record
    # gives; zipfile reads the cd_size bytes that end at the record and shifts every member offset
    # by the difference (meant for bytes prepended to an archive). They are one reading unless the
    # difference is non-zero — then each is listed, and every member of each is analysed.
    zip_start = directory_end - cd_size
    prefix = zip_start - cd_offset
    readings = [_Reading("torch (miniz)", cd_offset, 0)]
    if prefix:
        readings.append(_Reading("zipfile", zip_start, prefix))
    listed: list[tuple[_Reading, list[ZipMember], list[Issue]]] = []
    failed: list[tuple[_Reading, FormatError]] = []
    for reading in readings:
        found: list[Issue] = []
        try:
            if reading.start < 0 or reading.start + cd_size > directory_end:
                raise FormatError(
                    f"central directory offset {reading.start} + size {cd_size} runs past its end record "
                    f"at {directory_end}",
                    offset=eocd,
                )
            listing_members = _read_directory(
                data,
                reading.start,
                reading.start + cd_size,
                reading.shift,
                n_total,
                limits,
                found,
                check_time,
            )
        except FormatError as exc:
            failed.append((reading, exc))
            continue
        _check_duplicates(listing_members, found)
        listed.append((reading, listing_members, found))
    if not listed:
        raise failed[0][1]
    if prefix:
        issues.append(_readings_issue(prefix, cd_offset, zip_start, listed, failed, eocd))
    members: list[ZipMember] = []
    seen: set[tuple[int, int, bytes]] = set()
    for reading, listing_members, found in listed:
        issues.extend(found)
        regions.append((reading.start, reading.start + cd_size, f"central directory ({reading.who})"))
        for member in listing_members:
            key = (member.header_offset, member.data_offset, member.raw_name)
            if key not in seen:
                seen.add(key)
                members.append(dataclasses.replace(member, index=len(members)))
    if prefix > 0 and len(listed) == 1 and listed[0][0].shift:
        regions.append((0, prefix, "bytes before the archive"))
    for member in members:
        regions.append((member.header_offset, member.end, f"member {member.name!r}"))
    _check_regions(data, regions, issues)
    return ZipListing(tuple(members), tuple(issues), comment, prefix, data)


def member_head(listing: ZipListing, member: ZipMember, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of the member's content (for sniffing)."""
    src = listing.data[member.data_offset : member.data_end]
    if member.method == STORED:
        return bytes(src[:limit])
    decoder = _decoder(src, member, min(member.uncompressed_size, limit) + 1)
    try:
        return decoder.decompress(src, limit)
    except _DECODE_ERRORS as exc:
        raise FormatError(
            f"member {member.name!r}: {_METHOD_NAMES[member.method]} stream is corrupt: {exc}"
        ) from exc


def member_bytes(listing: ZipListing, member: ZipMember, limits: Limits) -> memoryview | bytes:
    """The member's content: a zero-copy view when stored, bounded decompression otherwise.

    Deflated, bzip2 and LZMA members (the methods Python's ``zipfile``, and so numpy and Keras,
    read) may expand to their declared size only, at most ``max_decompressed_bytes`` and
    ``max_compression_ratio`` times their compressed size; beyond that: LimitError.
    """
    src = listing.data[member.data_offset : member.data_end]
    if member.method == STORED:
        if member.compressed_size != member.uncompressed_size:
            raise FormatError(
                f"stored member {member.name!r}: compressed size {member.compressed_size} differs from "
                f"uncompressed size {member.uncompressed_size}",
                offset=member.header_offset,
            )
        return src
    if member.method not in COMPRESSED:
        raise FormatError(
            f"member {member.name!r}: unsupported compression method {_method(member.method)}",
            offset=member.header_offset,
        )
    declared = member.uncompressed_size
    if declared > limits.max_decompressed_bytes:
        raise LimitError(
            f"member {member.name!r} declares {declared} bytes uncompressed, more than "
            f"{limits.max_decompressed_bytes} (limit max_decompressed_bytes)",
            offset=member.header_offset,
        )
    if (
        declared > limits.compression_ratio_floor
        and declared > max(1, member.compressed_size) * limits.max_compression_ratio
    ):
        raise LimitError(
            f"member {member.name!r} would expand {member.compressed_size} bytes to {declared}, a ratio "
            f"above {limits.max_compression_ratio} (limit max_compression_ratio)",
            offset=member.header_offset,
        )
    decoder = _decoder(src, member, declared + 1)
    try:
        # One byte past the declared size is enough to prove a lie; memory stays bounded.
        out = decoder.decompress(src, declared + 1)
    except _DECODE_ERRORS as exc:
        raise FormatError(
            f"member {member.name!r}: {_METHOD_NAMES[member.method]} stream is corrupt: {exc}",
            offset=member.data_offset,
        ) from exc
    if len(out) > declared:
        raise LimitError(
            f"member {member.name!r} inflates past its declared size {declared}",
            offset=member.data_offset,
        )
    # zipfile also ends a bzip2/LZMA member when its compressed bytes are used up (an LZMA stream
    # may omit its end marker); a deflate stream must end.
    if len(out) < declared or not (decoder.eof or (member.method != DEFLATED and decoder.drained)):
        raise FormatError(
            f"member {member.name!r}: {_METHOD_NAMES[member.method]} stream ends after {len(out)} of {declared} bytes",
            offset=member.data_offset,
        )
    return out


class _Decoder:
    """One member's decompressor behind one interface; output bounded by ``max_length``."""

    def __init__(self, obj: Any, skip: int, *, inflate: bool = False) -> None:
        self._obj = obj
        self._skip = skip
        #: zlib's API reports leftover input as unconsumed_tail, bz2/lzma as needs_input
        self._inflate = inflate
        self.drained = False

    @property
    def eof(self) -> bool:
        return bool(self._obj.eof)

    def decompress(self, src: memoryview, max_length: int) -> bytes:
        out: bytes = self._obj.decompress(src[self._skip :], max_length)
        self.drained = not self._obj.unconsumed_tail if self._inflate else bool(self._obj.needs_input)
        return out


def _decoder(src: memoryview, member: ZipMember, most: int) -> _Decoder:
    """A decompressor for ``member`` that never needs a window larger than ``most`` output bytes."""
    if member.method == DEFLATED:
        return _Decoder(zlib.decompressobj(-15), 0, inflate=True)
    if member.method == BZIP2:
        return _Decoder(bz2.BZ2Decompressor(), 0)
    if member.method == LZMA:
        return _Decoder(_lzma(src, member, most), 4 + _LZMA_PROPS)
    raise FormatError(
        f"member {member.name!r}: unsupported compression method {_method(member.method)}",
        offset=member.header_offset,
    )


def _lzma(src: memoryview, member: ZipMember, most: int) -> lzma.LZMADecompressor:
    """Raw LZMA1 after zip's 4-byte header (2 bytes encoder version, 2 bytes properties size) and
    5 properties bytes (lc/lp/pb, dictionary size), checked as liblzma checks them for zipfile.

    The dictionary is capped at the output ever decoded (``most``): a decoder never looks further
    back than what it wrote, so the output is the same, and a file cannot make us allocate the
    4 GiB window it declares."""
    if len(src) < 4 + _LZMA_PROPS:
        raise FormatError(
            f"member {member.name!r}: LZMA data is shorter than its {4 + _LZMA_PROPS}-byte header",
            offset=member.data_offset,
        )
    (size,) = struct.unpack_from("<H", src, 2)
    if size != _LZMA_PROPS:
        raise FormatError(
            f"member {member.name!r}: LZMA properties are {size} bytes, LZMA1 has {_LZMA_PROPS}",
            offset=member.data_offset,
        )
    byte = src[4]
    pb, rest = divmod(byte, 45)
    lp, lc = divmod(rest, 9)
    (dict_size,) = struct.unpack_from("<I", src, 5)
    if byte > _LZMA_MAX_LCLPPB or lc + lp > 4:
        raise FormatError(
            f"member {member.name!r}: LZMA properties byte {byte} (lc={lc} lp={lp} pb={pb}) is invalid",
            offset=member.data_offset,
        )
    window = max(_LZMA_MIN_DICT, min(dict_size, most))
    filters = [{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": window}]
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)


def _sig(data: memoryview, pos: int) -> bytes:
    return bytes(data[pos : pos + 4])


def _fold(name: str) -> str:
    # miniz compares names with an ASCII-only tolower.
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _method(method: int) -> str:
    name = _METHOD_NAMES.get(method)
    return f"{method} ({name})" if name else str(method)


def _find_eocd(data: memoryview) -> int:
    size = len(data)
    if size < _EOCD_SIZE:
        raise FormatError(f"{size}-byte file is too short for a zip end record ({_EOCD_SIZE} bytes)")
    # Bounded backward search: the record sits in the last 22 + 65535 bytes (comment at most 64 KiB).
    start = max(0, size - _EOCD_SIZE - _MAX_COMMENT)
    window = bytes(data[start:])
    pos = window.rfind(_EOCD_SIG, 0, len(window) - _EOCD_SIZE + 4)
    if pos < 0:
        raise FormatError(f"no zip end of central directory record in the last {len(window)} bytes")
    return start + pos


def _read_zip64(
    data: memoryview, locator: int, regions: list[tuple[int, int, str]], issues: list[Issue]
) -> tuple[int, int, int, int, int]:
    """(entries on disk, entries, directory size, directory offset, record position).

    torch (miniz) finds the zip64 end record at the offset its locator gives; zipfile assumes it
    sits right before the locator (fixed size) and ignores that offset. One record at one of the
    two places is read with an issue naming the reader that misses it; two different records are
    two archives and an error."""
    z64_disk, record, total_disks = struct.unpack_from("<IQI", data, locator + 4)
    if z64_disk != 0 or total_disks > 1:
        raise FormatError(f"zip64 locator names disk {z64_disk} of {total_disks}: multi-disk archive")
    assumed = locator - _Z64_EOCD_SIZE
    at_offset = record + _Z64_EOCD_SIZE <= locator and _sig(data, record) == _Z64_EOCD_SIG
    at_assumed = assumed >= 0 and _sig(data, assumed) == _Z64_EOCD_SIG
    if record != assumed and at_offset and at_assumed:
        raise FormatError(
            f"two zip64 end records: torch reads the one at offset {record} (the locator's), zipfile the one "
            f"at {assumed} (right before the locator)",
            offset=locator,
        )
    if record != assumed and (at_offset or at_assumed):
        missed = "zipfile" if at_offset else "torch (miniz)"
        issues.append(
            Issue(
                "zip.zip64-mismatch",
                Severity.SUSPICIOUS,
                f"the zip64 locator points at offset {record}, the zip64 end record "
                f"{'is there' if at_offset else f'sits at {assumed}'}, right before the locator is where "
                f"zipfile looks: {missed} does not find it and reads another archive (or none)",
                offset=locator,
            )
        )
        record = record if at_offset else assumed
    if record + _Z64_EOCD_SIZE > locator:
        raise FormatError(
            f"zip64 end record offset {record} + {_Z64_EOCD_SIZE} runs past its locator at {locator}",
            offset=locator,
        )
    if _sig(data, record) != _Z64_EOCD_SIG:
        raise FormatError(f"no zip64 end record signature at offset {record}", offset=record)
    (rec_size, _made, _needed, disk, cd_disk, n_disk, n_total, cd_size, cd_offset) = struct.unpack_from(
        "<QHHIIQQQQ", data, record + 4
    )
    if disk != 0 or cd_disk != 0:
        raise FormatError(
            f"zip64 end record names disk {disk} / directory disk {cd_disk}: multi-disk archive"
        )
    rec_end = record + 12 + rec_size
    if rec_size < _Z64_EOCD_SIZE - 12 or rec_end > locator:
        raise FormatError(
            f"zip64 end record size {rec_size} does not fit between offset {record} and its locator at {locator}",
            offset=record,
        )
    regions.append((record, rec_end, "zip64 end record"))
    regions.append((locator, locator + _Z64_LOCATOR_SIZE, "zip64 locator"))
    return n_disk, n_total, cd_size, cd_offset, record


def _read_directory(
    data: memoryview,
    pos: int,
    end: int,
    prefix: int,
    declared: int,
    limits: Limits,
    issues: list[Issue],
    check_time: Callable[[], None] | None,
) -> list[ZipMember]:
    members: list[ZipMember] = []
    # zipfile reads entries until the directory size is used up; miniz trusts the entry count.
    while pos < end:
        if len(members) >= limits.max_archive_members:
            raise LimitError(
                f"more than {limits.max_archive_members} entries in the central directory "
                "(limit max_archive_members)",
                offset=pos,
            )
        if check_time is not None and len(members) % 4096 == 0:
            check_time()
        if pos + _CENTRAL_SIZE > end:
            raise FormatError(
                f"central directory entry {len(members)} at offset {pos} needs {_CENTRAL_SIZE} bytes, "
                f"only {end - pos} left in the directory",
                offset=pos,
            )
        if _sig(data, pos) != _CENTRAL_SIG:
            raise FormatError(
                f"central directory entry {len(members)}: bad signature {bytes(data[pos : pos + 4])!r} "
                f"at offset {pos}",
                offset=pos,
            )
        (
            _made,
            _needed,
            flags,
            method,
            _t,
            _d,
            crc,
            csize,
            usize,
            nlen,
            elen,
            clen,
            disk,
            _ia,
            _ea,
            offset,
        ) = struct.unpack_from("<HHHHHHIIIHHHHHII", data, pos + 4)
        var_end = pos + _CENTRAL_SIZE + nlen + elen + clen
        if var_end > end:
            raise FormatError(
                f"central directory entry {len(members)}: name, extra and comment ({nlen}+{elen}+{clen} bytes) "
                f"run past the end of the directory at {end}",
                offset=pos,
            )
        raw_name = bytes(data[pos + _CENTRAL_SIZE : pos + _CENTRAL_SIZE + nlen])
        extra = data[pos + _CENTRAL_SIZE + nlen : pos + _CENTRAL_SIZE + nlen + elen]
        name = _decode_name(raw_name, flags, issues, pos)
        usize, csize, offset = _zip64_fields(extra, usize, csize, offset, disk, name, issues, pos)
        members.append(_check_local(data, len(members), name, raw_name, flags, method, crc, csize, usize,
                                    offset + prefix, issues))  # fmt: skip
        pos = var_end
    if len(members) != declared:
        issues.append(
            Issue(
                "zip.entry-count",
                Severity.SUSPICIOUS,
                f"end record declares {declared} entries, the central directory holds {len(members)}: "
                "torch (miniz) trusts the count, zipfile the directory size",
                offset=pos,
            )
        )
    return members


def _decode_name(raw: bytes, flags: int, issues: list[Issue], pos: int) -> str:
    if flags & 0x0800:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            issues.append(
                Issue(
                    "zip.bad-name",
                    Severity.SUSPICIOUS,
                    f"member name {raw!r} is flagged UTF-8 but does not decode; zipfile refuses it",
                    offset=pos,
                )
            )
            return raw.decode("utf-8", errors="replace")
    return raw.decode("cp437")


def _zip64_fields(
    extra: memoryview,
    usize: int,
    csize: int,
    offset: int,
    disk: int,
    name: str,
    issues: list[Issue],
    pos: int,
) -> tuple[int, int, int]:
    """Replace saturated 32-bit fields with their zip64 extra values (in the order the spec gives)."""
    needed = [usize == _U32, csize == _U32, offset == _U32, disk == _U16]
    cursor = 0
    found = False
    while cursor + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, cursor)
        body_end = cursor + 4 + length
        if body_end > len(extra):
            issues.append(
                Issue(
                    "zip.bad-extra",
                    Severity.SUSPICIOUS,
                    f"member {name!r}: extra field 0x{tag:04x} of {length} bytes overruns the "
                    f"{len(extra)}-byte extra area; zipfile rejects it",
                    offset=pos,
                )
            )
            break
        if tag == 0x0001 and not found:
            found = True
            body = extra[cursor + 4 : body_end]
            at = 0
            values = [usize, csize, offset]
            for i in range(3):
                if needed[i]:
                    if at + 8 > len(body):
                        raise FormatError(
                            f"member {name!r}: zip64 extra field is {len(body)} bytes, too short for its sizes",
                            offset=pos,
                        )
                    values[i] = struct.unpack_from("<Q", body, at)[0]
                    at += 8
            usize, csize, offset = values
        cursor = body_end
    if (needed[0] or needed[1] or needed[2]) and not found:
        raise FormatError(
            f"member {name!r}: 32-bit fields are saturated but there is no zip64 extra field", offset=pos
        )
    return usize, csize, offset


def _check_local(
    data: memoryview,
    index: int,
    name: str,
    raw_name: bytes,
    flags: int,
    method: int,
    crc: int,
    csize: int,
    usize: int,
    header: int,
    issues: list[Issue],
) -> ZipMember:
    size = len(data)
    if header < 0 or header + _LOCAL_SIZE > size:
        raise FormatError(
            f"member {name!r}: local header offset {header} is past the end of the {size}-byte file",
            offset=header,
        )
    if _sig(data, header) != LOCAL_SIG:
        raise FormatError(
            f"member {name!r}: no local header signature at offset {header} "
            f"(got {bytes(data[header : header + 4])!r})",
            offset=header,
        )
    (_needed, lflags, lmethod, _t, _d, lcrc, lcsize, lusize, nlen, elen) = struct.unpack_from(
        "<HHHHHIIIHH", data, header + 4
    )
    data_offset = header + _LOCAL_SIZE + nlen + elen
    if data_offset + csize > size:
        raise FormatError(
            f"member {name!r}: data ({csize} bytes from offset {data_offset}) runs past the end of the "
            f"{size}-byte file",
            offset=header,
        )
    local_name = bytes(data[header + _LOCAL_SIZE : header + _LOCAL_SIZE + nlen])
    where = header
    if local_name != raw_name:
        issues.append(
            Issue(
                "zip.name-mismatch",
                Severity.SUSPICIOUS,
                f"member {name!r}: local header names it {local_name!r}; torch uses the central name, "
                "zipfile refuses the member",
                offset=where,
            )
        )
    odd = (flags | lflags) & ~_ORDINARY_FLAGS
    if odd:
        bits = [1 << i for i in range(16) if odd & (1 << i)]
        labels = ", ".join(f"0x{bit:x} ({_FLAG_NAMES.get(bit, 'reserved')})" for bit in bits)
        issues.append(
            Issue(
                "zip.flag-bits",
                Severity.SUSPICIOUS,
                f"member {name!r}: flag bits {labels} (central 0x{flags:04x}, local 0x{lflags:04x}); "
                "zipfile and torch refuse such members, other readers ignore the bits; read as plain data",
                offset=where,
            )
        )
    if lmethod != method:
        issues.append(
            Issue(
                "zip.header-mismatch",
                Severity.SUSPICIOUS,
                f"member {name!r}: local header says method {lmethod}, central directory {method}",
                offset=where,
            )
        )
    if not lflags & 0x0008 and (lcrc != crc or lcsize not in (_U32, csize) or lusize not in (_U32, usize)):
        issues.append(
            Issue(
                "zip.header-mismatch",
                Severity.SUSPICIOUS,
                f"member {name!r}: local header crc/sizes 0x{lcrc:08x}/{lcsize}/{lusize} differ from the "
                f"central directory's 0x{crc:08x}/{csize}/{usize}",
                offset=where,
            )
        )
    end = data_offset + csize
    if (flags | lflags) & 0x0008:
        # Data descriptor: optional signature, crc, then 32- or 64-bit sizes.
        wide = csize >= _U32 or usize >= _U32 or lcsize == _U32
        length = (20 if wide else 12) + (4 if _sig(data, end) == _DESCRIPTOR_SIG else 0)
        end = min(size, end + length)
    return ZipMember(index, name, raw_name, local_name, method, flags, lflags, crc, csize, usize, header,
                     data_offset, end)  # fmt: skip


def _check_duplicates(members: list[ZipMember], issues: list[Issue]) -> None:
    seen: dict[str, ZipMember] = {}
    for member in members:
        key = _fold(member.name)
        first = seen.get(key)
        if first is None:
            seen[key] = member
            continue
        same = (
            "the same name"
            if first.name == member.name
            else f"a name differing only in case ({first.name!r})"
        )
        issues.append(
            Issue(
                "zip.duplicate-name",
                Severity.SUSPICIOUS,
                f"member {member.name!r} (entry {member.index}) has {same} as entry {first.index}: torch "
                "may read either copy (case-insensitive binary search), zipfile reads the last; every "
                "copy is analysed",
                offset=member.header_offset,
            )
        )


def _check_regions(data: memoryview, regions: list[tuple[int, int, str]], issues: list[Issue]) -> None:
    """Every byte must belong to exactly one header, member or directory."""
    regions.sort()
    cursor = 0
    last = "start of file"
    gaps = overlaps = 0
    for start, end, label in regions:
        if start > cursor:
            gaps += 1
            if gaps <= _MAX_REGION_ISSUES:
                issues.append(_gap_issue(data, cursor, start, last))
        elif start < cursor:
            overlaps += 1
            if overlaps <= _MAX_REGION_ISSUES:
                issues.append(
                    Issue(
                        "zip.overlap",
                        Severity.SUSPICIOUS,
                        f"{label} (offset {start}) overlaps {last} (which ends at {cursor}): one byte range "
                        "read as two things",
                        offset=start,
                    )
                )
        if end >= cursor:
            cursor, last = end, label
    if cursor < len(data):
        gaps += 1
        if gaps <= _MAX_REGION_ISSUES:
            issues.append(_gap_issue(data, cursor, len(data), last))
    for rule, count in (("zip.gap", gaps), ("zip.overlap", overlaps)):
        if count > _MAX_REGION_ISSUES:
            issues.append(
                Issue(
                    rule, Severity.SUSPICIOUS, f"{count - _MAX_REGION_ISSUES} more {rule} findings not listed"
                )
            )


def _gap_issue(data: memoryview, start: int, end: int, after: str) -> Issue:
    hint = ""
    if _sig(data, start) == LOCAL_SIG and start + _LOCAL_SIZE <= end:
        nlen = struct.unpack_from("<H", data, start + 26)[0]
        hidden = bytes(data[start + _LOCAL_SIZE : min(end, start + _LOCAL_SIZE + min(nlen, 200))])
        hint = f"; it holds a local header for {hidden!r} that the central directory does not list"
    return Issue(
        "zip.gap",
        Severity.SUSPICIOUS,
        f"{end - start} bytes at offset {start} (after {after}) belong to no member or directory{hint}",
        offset=start,
    )
