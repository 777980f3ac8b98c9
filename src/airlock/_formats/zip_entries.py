"""Central directory entries, each checked against its local header: the names, flags, methods,
sizes and zip64 fields torch's reader (miniz) and Python's zipfile take from them, and every
place where the two headers disagree (an :class:`~airlock._formats.base.Issue`, SUSPICIOUS).
The end records and the readings of the directory are ``zip.py``'s."""

from __future__ import annotations

import struct
from collections.abc import Callable

from airlock._formats.base import Issue
from airlock._formats.zip_model import LOCAL_SIG, LOCAL_SIZE, ZipMember, sig
from airlock.errors import FormatError, LimitError
from airlock.limits import Limits
from airlock.results import Severity

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["read_directory"]

_CENTRAL_SIG: Final = b"PK\x01\x02"
_DESCRIPTOR_SIG: Final = b"PK\x07\x08"
_CENTRAL_SIZE: Final = 46
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


def read_directory(
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
        try:
            if pos + _CENTRAL_SIZE > end:
                raise FormatError(
                    f"central directory entry {len(members)} at offset {pos} needs {_CENTRAL_SIZE} bytes, "
                    f"only {end - pos} left in the directory",
                    offset=pos,
                )
            if sig(data, pos) != _CENTRAL_SIG:
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
        except FormatError as exc:
            if len(members) < declared:
                raise
            # Past the entries the end record counts: torch (miniz) never reads this far, zipfile
            # refuses the archive. The counted entries are what torch reads: analyse them.
            issues.append(
                Issue(
                    "zip.entry-count",
                    Severity.SUSPICIOUS,
                    f"after the {declared} entries the end record counts, the directory holds bytes that "
                    f"do not list ({exc}): torch (miniz) reads the counted entries, zipfile refuses the archive",
                    offset=pos,
                )
            )
            return members
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
    if header < 0 or header + LOCAL_SIZE > size:
        raise FormatError(
            f"member {name!r}: local header offset {header} is past the end of the {size}-byte file",
            offset=header,
        )
    if sig(data, header) != LOCAL_SIG:
        raise FormatError(
            f"member {name!r}: no local header signature at offset {header} "
            f"(got {bytes(data[header : header + 4])!r})",
            offset=header,
        )
    (_needed, lflags, lmethod, _t, _d, lcrc, lcsize, lusize, nlen, elen) = struct.unpack_from(
        "<HHHHHIIIHH", data, header + 4
    )
    data_offset = header + LOCAL_SIZE + nlen + elen
    if data_offset + csize > size:
        raise FormatError(
            f"member {name!r}: data ({csize} bytes from offset {data_offset}) runs past the end of the "
            f"{size}-byte file",
            offset=header,
        )
    local_name = bytes(data[header + LOCAL_SIZE : header + LOCAL_SIZE + nlen])
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
        length = (20 if wide else 12) + (4 if sig(data, end) == _DESCRIPTOR_SIG else 0)
        end = min(size, end + length)
    return ZipMember(index, name, raw_name, local_name, method, flags, lflags, crc, csize, usize, header,
                     data_offset, end)  # fmt: skip
