"""Build zip archives byte by byte, with every field open to tampering (tests only).

Python's zipfile cannot write the malformed archives the reader must recognise (local/central
name mismatches, flag bits on plain data, overlapping members, hidden local headers), so the
tests write them with this small writer instead.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from dataclasses import dataclass


@dataclass
class Entry:
    """One member. ``None`` fields take the value a well-formed archive would have."""

    name: bytes
    data: bytes
    method: int = 0
    flags: int = 0
    local_flags: int | None = None
    local_name: bytes | None = None
    local_method: int | None = None
    crc: int | None = None
    uncompressed_size: int | None = None
    local_extra: bytes = b""
    central_extra: bytes = b""
    #: write a data descriptor (with signature) after the data and set flag bit 3
    descriptor: bool = False
    #: point the central entry at this earlier entry's local header instead of writing one
    same_local_as: int | None = None
    #: raw bytes written just before this entry's local header (a gap)
    before: bytes = b""
    #: force zip64 fields for this entry (sizes and offset in the zip64 extra)
    zip64: bool = False
    #: the member's bytes as stored, when not what ``method`` makes of ``data``
    packed: bytes | None = None


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def zip_lzma(data: bytes, *, dict_size: int = 1 << 20, declared_dict: int | None = None) -> bytes:
    """A zip LZMA (method 14) member: version, properties size, 5 properties bytes, raw LZMA1."""
    lc, lp, pb = 3, 0, 2
    filters = [{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}]
    packer = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=filters)
    stream = packer.compress(data) + packer.flush()
    props = struct.pack("<BI", (pb * 5 + lp) * 9 + lc, dict_size if declared_dict is None else declared_dict)
    return struct.pack("<BBH", 9, 20, len(props)) + props + stream


def build_zip(
    entries: list[Entry],
    *,
    prefix: bytes = b"",
    comment: bytes = b"",
    trailing: bytes = b"",
    zip64: bool = False,
    declared_count: int | None = None,
) -> bytes:
    """The archive's bytes. Offsets in headers are relative to the archive start (after ``prefix``)."""
    out = bytearray()
    central = bytearray()
    offsets: list[int] = []
    for entry in entries:
        payload = entry.packed if entry.packed is not None else _pack(entry.method, entry.data)
        crc = zlib.crc32(entry.data) if entry.crc is None else entry.crc
        usize = len(entry.data) if entry.uncompressed_size is None else entry.uncompressed_size
        flags = entry.flags | (0x0008 if entry.descriptor else 0)
        lflags = flags if entry.local_flags is None else entry.local_flags
        if entry.same_local_as is not None:
            offset = offsets[entry.same_local_as]
        else:
            out += entry.before
            offset = len(out)
            lname = entry.name if entry.local_name is None else entry.local_name
            lmethod = entry.method if entry.local_method is None else entry.local_method
            lextra = entry.local_extra
            lcsize, lusize = len(payload), usize
            if entry.zip64:
                lextra = struct.pack("<HHQQ", 1, 16, usize, len(payload)) + lextra
                lcsize = lusize = 0xFFFFFFFF
            lcrc = 0 if entry.descriptor else crc
            if entry.descriptor:
                lcsize = lusize = 0
            out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, lflags, lmethod, 0, 0x21, lcrc, lcsize,
                               lusize, len(lname), len(lextra))  # fmt: skip
            out += lname + lextra + payload
            if entry.descriptor:
                out += struct.pack("<4sIII", b"PK\x07\x08", crc, len(payload), usize)
        offsets.append(offset)
        cextra = entry.central_extra
        csize_field, usize_field, offset_field = len(payload), usize, offset
        if entry.zip64:
            cextra = struct.pack("<HHQQQ", 1, 24, usize, len(payload), offset) + cextra
            csize_field = usize_field = offset_field = 0xFFFFFFFF
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, entry.method, 0, 0x21, crc,
                               csize_field, usize_field, len(entry.name), len(cextra), 0, 0, 0, 0, offset_field)  # fmt: skip
        central += entry.name + cextra
    cd_offset = len(out)
    out += central
    count = len(entries) if declared_count is None else declared_count
    if zip64:
        record = len(out)
        out += struct.pack(
            "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), cd_offset
        )
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, record, 1)
        out += struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, len(comment)
        )
    else:
        out += struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(central), cd_offset, len(comment)
        )
    return prefix + bytes(out) + comment + trailing


def _pack(method: int, data: bytes) -> bytes:
    if method == 8:
        return deflate(data)
    if method == 12:
        return bz2.compress(data)
    if method == 14:
        return zip_lzma(data)
    return data
