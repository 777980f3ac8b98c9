"""Differential checks over a parsed zip: where torch's reader (miniz) and Python's zipfile see
different archives — two readings of one end record, duplicate names (torch's case-insensitive
binary search vs zipfile's last copy), and bytes that belong to no member or directory."""

from __future__ import annotations

import struct

from airlock._formats.base import Issue
from airlock._formats.zip_model import LOCAL_SIG, LOCAL_SIZE, ZipMember, fold, sig
from airlock.errors import FormatError
from airlock.results import Severity

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, NamedTuple
else:
    from airlock._record import NamedTuple

__all__ = ["Reading", "check_duplicates", "check_regions", "readings_issue"]

#: at most this many gap/overlap issues are listed per archive; the rest are summed up in one
_MAX_REGION_ISSUES: Final = 16


class Reading(NamedTuple):
    """Where one reader looks for the central directory, and how it shifts member offsets."""

    who: str
    start: int
    shift: int


def readings_issue(
    prefix: int,
    cd_offset: int,
    zip_start: int,
    listed: list[tuple[Reading, list[ZipMember], list[Issue]]],
    failed: list[tuple[Reading, FormatError]],
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


def check_duplicates(members: list[ZipMember], issues: list[Issue]) -> None:
    seen: dict[str, ZipMember] = {}
    for member in members:
        key = fold(member.name)
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


def check_regions(data: memoryview, regions: list[tuple[int, int, str]], issues: list[Issue]) -> None:
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
    if sig(data, start) == LOCAL_SIG and start + LOCAL_SIZE <= end:
        nlen = struct.unpack_from("<H", data, start + 26)[0]
        hidden = bytes(data[start + LOCAL_SIZE : min(end, start + LOCAL_SIZE + min(nlen, 200))])
        hint = f"; it holds a local header for {hidden!r} that the central directory does not list"
    return Issue(
        "zip.gap",
        Severity.SUSPICIOUS,
        f"{end - start} bytes at offset {start} (after {after}) belong to no member or directory{hint}",
        offset=start,
    )
