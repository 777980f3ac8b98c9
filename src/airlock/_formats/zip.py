"""airlock's own zip reader: the directory as PyTorch's loader sees it, plus every differential.

**Shared API** (other readers build on it, e.g. ``.keras`` and ``.npz``): :func:`parse_zip` lists
the members, :func:`member_bytes` / :func:`member_head` give a member's bytes, bounded. Keep it
small; add fields rather than change them. The API is re-exported here from three modules, one
idea each: :mod:`~airlock._formats.zip_model` (member records, the listing, method codes), this
module (the directory: end records, zip64, the readings of one directory),
:mod:`~airlock._formats.zip_entries` (central directory entries checked against local headers),
:mod:`~airlock._formats.zip_differentials` (what torch's reader and zipfile read differently) and
:mod:`~airlock._formats.zip_members` (member extraction, bounded decompression).

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

import struct
from collections.abc import Callable

from airlock._formats.base import Issue
from airlock._formats.zip_differentials import Reading, check_duplicates, check_regions, readings_issue
from airlock._formats.zip_entries import read_directory
from airlock._formats.zip_members import member_bytes, member_head
from airlock._formats.zip_model import (
    BZIP2,
    COMPRESSED,
    DEFLATED,
    LOCAL_SIG,
    LZMA,
    STORED,
    ZipListing,
    ZipMember,
    sig,
)
from airlock._record import replace
from airlock.errors import FormatError, LimitError
from airlock.limits import Limits
from airlock.results import Severity

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "BZIP2",
    "COMPRESSED",
    "DEFLATED",
    "LOCAL_SIG",
    "LZMA",
    "STORED",
    "ZipListing",
    "ZipMember",
    "looks_like_zip",
    "member_bytes",
    "member_head",
    "parse_zip",
]


_EOCD_SIG: Final = b"PK\x05\x06"
_Z64_LOCATOR_SIG: Final = b"PK\x06\x07"
_Z64_EOCD_SIG: Final = b"PK\x06\x06"
_EOCD_SIZE: Final = 22
_Z64_LOCATOR_SIZE: Final = 20
_Z64_EOCD_SIZE: Final = 56
_MAX_COMMENT: Final = 0xFFFF
_U16: Final = 0xFFFF
_U32: Final = 0xFFFFFFFF


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
    if locator >= 0 and sig(data, locator) == _Z64_LOCATOR_SIG:
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
    readings = [Reading("torch (miniz)", cd_offset, 0)]
    if prefix:
        readings.append(Reading("zipfile", zip_start, prefix))
    listed: list[tuple[Reading, list[ZipMember], list[Issue]]] = []
    failed: list[tuple[Reading, FormatError]] = []
    for reading in readings:
        found: list[Issue] = []
        try:
            if reading.start < 0 or reading.start + cd_size > directory_end:
                raise FormatError(
                    f"central directory offset {reading.start} + size {cd_size} runs past its end record "
                    f"at {directory_end}",
                    offset=eocd,
                )
            listing_members = read_directory(
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
        check_duplicates(listing_members, found)
        listed.append((reading, listing_members, found))
    if not listed:
        raise failed[0][1]
    if prefix:
        issues.append(readings_issue(prefix, cd_offset, zip_start, listed, failed, eocd))
    members: list[ZipMember] = []
    seen: set[tuple[int, int, bytes]] = set()
    for reading, listing_members, found in listed:
        issues.extend(found)
        regions.append((reading.start, reading.start + cd_size, f"central directory ({reading.who})"))
        for member in listing_members:
            key = (member.header_offset, member.data_offset, member.raw_name)
            if key not in seen:
                seen.add(key)
                index = len(members)
                members.append(member if member.index == index else replace(member, index=index))
    if prefix > 0 and len(listed) == 1 and listed[0][0].shift:
        regions.append((0, prefix, "bytes before the archive"))
    for member in members:
        regions.append((member.header_offset, member.end, f"member {member.name!r}"))
    check_regions(data, regions, issues)
    return ZipListing(tuple(members), tuple(issues), comment, prefix, data)


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
    at_offset = record + _Z64_EOCD_SIZE <= locator and sig(data, record) == _Z64_EOCD_SIG
    at_assumed = assumed >= 0 and sig(data, assumed) == _Z64_EOCD_SIG
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
    if sig(data, record) != _Z64_EOCD_SIG:
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
