"""The zip data model shared by the directory parser, the differential checks and member
extraction: member records, the listing, and the compression methods Python's zipfile reads."""

from __future__ import annotations

from airlock._formats.base import Issue
from airlock._record import record

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "BZIP2", "COMPRESSED", "DEFLATED", "LOCAL_SIG", "LOCAL_SIZE", "LZMA", "METHOD_NAMES", "STORED",
    "ZipListing", "ZipMember", "fold", "method_label", "sig",
]  # fmt: skip

STORED: Final = 0
DEFLATED: Final = 8
BZIP2: Final = 12
LZMA: Final = 14
#: the compression methods Python's zipfile reads (torch's miniz: deflate only)
COMPRESSED: Final = frozenset({DEFLATED, BZIP2, LZMA})
LOCAL_SIG: Final = b"PK\x03\x04"
LOCAL_SIZE: Final = 30
METHOD_NAMES: Final = {
    8: "deflate",
    12: "bzip2",
    14: "lzma",
    93: "zstd",
    95: "xz",
    98: "ppmd",
    9: "deflate64",
}


@record
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


class ZipListing:
    """The members of one zip archive in central directory order, and the differentials found."""

    __slots__ = ("comment", "data", "issues", "members", "prefix")

    def __init__(
        self,
        members: tuple[ZipMember, ...],
        issues: tuple[Issue, ...],
        comment: bytes,
        prefix: int,
        data: memoryview,
    ) -> None:
        self.members = members
        self.issues = issues
        self.comment = comment
        #: bytes before the archive proper (zipfile shifts every offset by this much; torch does not)
        self.prefix = prefix
        self.data = data

    def find(self, name: str, *, case_insensitive: bool = False) -> tuple[ZipMember, ...]:
        """Every member called ``name`` (torch: ``case_insensitive=True``), in directory order."""
        if case_insensitive:
            key = fold(name)
            return tuple(m for m in self.members if fold(m.name) == key)
        return tuple(m for m in self.members if m.name == name)


def sig(data: memoryview, pos: int) -> bytes:
    return bytes(data[pos : pos + 4])


def fold(name: str) -> str:
    # miniz compares names with an ASCII-only tolower: str.lower() is that on an ASCII name (and
    # much cheaper than translate), but would also fold non-ASCII letters such as "É".
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def method_label(method: int) -> str:
    name = METHOD_NAMES.get(method)
    return f"{method} ({name})" if name else str(method)
