"""Tar archives: torch's legacy tar checkpoints and any other tar. Nothing is ever extracted.

Headers are read with the standard library's ``tarfile`` — the very parser ``torch.load`` uses
for these files — over a read-only view of the bytes (no copy, no extraction, no link
following). Every member's data range is checked against the file; the member count is bounded
by ``max_archive_members``. Names and links an extracting loader would write outside its folder
(or write through) are MALICIOUS (:mod:`airlock._formats.tar_paths`); other links and device
nodes are findings (an extracting loader would follow or create them); duplicate names are findings (``tarfile``
and torch use the last copy, other tools the first — every copy is analysed).

**torch legacy tar** (members ``storages``, ``tensors``, ``pickle``, optionally ``sys_info``),
read the way ``torch.serialization`` reads it: ``storages`` is a pickled count, then per storage
a pickled ``(key, location, storage_type)`` followed by an int64 element count and raw bytes,
then a pickled list of views; ``tensors`` is a pickled count, then per tensor a pickled
``(key, storage_id, type)`` followed by int32 ndim, 4 pad bytes, sizes, strides and an offset
(int64 each); ``pickle`` is the main object. A legacy name that is a hard link is read as the
member ``tarfile.extract`` writes for it (:func:`_linked_legacy`). Every pickle is analysed; the raw bytes between
them are skipped by size, never decoded as opcodes. Other tars: every member is a nested file.
"""

from __future__ import annotations

import copy
import io
import posixpath
import struct
import tarfile
from collections.abc import Iterator
from typing import Final

from airlock._formats.base import Fact, Issue, Nested, PickleStream, ReadContext
from airlock._formats.pickle_ops import decode_op
from airlock._formats.registry import looks_like_tar
from airlock._formats.tar_paths import extraction_issues
from airlock.errors import FormatError, LimitError
from airlock.results import Severity

__all__ = ["TarReader"]

_LEGACY: Final = ("storages", "tensors", "pickle")
#: element sizes of the legacy storage classes (``torch.<Name>Storage``)
_ELEMENT_SIZES: Final = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "QUInt8Storage": 1, "QInt8Storage": 1,
    "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1, "UntypedStorage": 1,
}  # fmt: skip
_STOP: Final = 0x2E
_INT_OPS: Final = frozenset({0x4B, 0x4D, 0x4A, 0x8A, 0x49})  # BININT1 BININT2 BININT LONG1 INT
_HEADER_OPS: Final = frozenset({0x80, 0x95})  # PROTO FRAME
_STRING_OPS: Final = frozenset({0x8C, 0x58, 0x56, 0x55, 0x54, 0x53})


class _ViewFile(io.RawIOBase):
    """A read-only, seekable file over a memoryview, so tarfile reads headers without a copy."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """At most the bytes left, allocated after bounding: ``RawIOBase.read(n)`` allocates ``n``
        bytes first, and ``tarfile`` reads a pax or GNU long-name header's data with the size its
        header declares (outside review 6: a declared 2**60 bytes raised MemoryError out of the
        scan, also from a checkpoint storage read as a tar)."""
        start = min(self._pos, len(self._data))
        end = len(self._data) if size is None or size < 0 else min(len(self._data), start + size)
        self._pos = max(self._pos, end)
        return bytes(self._data[start:end])

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data[self._pos : self._pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


class TarReader:
    name = "tar"

    def sniff(self, head: bytes, size: int) -> bool:
        return looks_like_tar(head)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        members = _list(data, ctx)
        names: dict[str, int] = {}
        for info in members:
            names[info.name] = names.get(info.name, 0) + 1
        for name, count in names.items():
            if count > 1:
                yield Issue(
                    "tar.duplicate-name",
                    Severity.SUSPICIOUS,
                    f"{count} members are named {name!r}: tarfile (and torch) use the last, other tools the "
                    "first; every copy is analysed",
                )
        regular = [m for m in members if m.isreg()]
        yield from extraction_issues(members, ctx.check_time)
        for info in members:
            if not info.isreg() and not info.isdir() and not info.issym() and not info.islnk():
                yield Issue(
                    "tar.special",
                    Severity.SUSPICIOUS,
                    f"member {info.name!r} is a device, fifo or other special file (type {info.type!r})",
                    offset=info.offset,
                )
        linked = _linked_legacy(members)
        if all(any(m.name == name for m in regular) or name in linked for name in _LEGACY):
            yield from _legacy(data, regular, ctx)
            for name, target in linked.items():
                # what torch.load's tar.extract(name) writes: the hard link's target, read as name
                yield from _legacy(data, [_renamed(target, name)], ctx)
            return
        for info in regular:
            ctx.check_time()
            yield Nested(info.name, data[info.offset_data : info.offset_data + info.size])


def _list(data: memoryview, ctx: ReadContext) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    try:
        with tarfile.open(fileobj=_ViewFile(data), mode="r:") as tar:
            while True:
                ctx.check_time()
                info = tar.next()
                if info is None:
                    break
                if len(members) >= ctx.limits.max_archive_members:
                    raise LimitError(
                        f"more than {ctx.limits.max_archive_members} tar members (limit max_archive_members)",
                        offset=info.offset,
                    )
                if info.isreg() and info.offset_data + info.size > len(data):
                    raise FormatError(
                        f"tar member {info.name!r}: {info.size} bytes from offset {info.offset_data} run past "
                        f"the end of the {len(data)}-byte file",
                        offset=info.offset,
                    )
                members.append(info)
    except (tarfile.TarError, ValueError, UnicodeError, OverflowError, EOFError) as exc:
        raise FormatError(f"tar: {exc}") from exc
    if not members:
        raise FormatError("tar archive has no members")
    return members


def _linked_legacy(members: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    """The legacy names (and ``sys_info``) whose member ``torch.load`` reads is a link, each with
    the regular member whose bytes it reads in its place (outside reviews 6 and 7: a tar whose
    ``storages`` was a hard link, or whose ``tensors`` was a symbolic link to ``storages``, ran its
    pickles under ``torch.load`` while this reader took it for a plain tar).

    As ``torch.load`` and ``tarfile`` do it: the member of a name is the last of that exact name
    (``getmember``).
    * ``storages``, then ``tensors``, are *extracted* into a fresh folder and opened there: a hard
      link is written as its target (``_find_link_target``: the last member *before* the link whose
      normalised name is the link's normalised target), a hard link to a hard link in turn; a
      symbolic link is written as a link and followed when opened, so it reads a legacy file
      extracted before it (``tensors`` -> ``storages``) and nothing of the archive otherwise
      (that a link points out of the folder is an extraction finding, :mod:`.tar_paths`).
    * ``pickle`` (and ``sys_info``) are read with ``extractfile``, which reads any link as its
      target in the archive: a hard link as above, a symbolic link as the last member, anywhere in
      the archive, named by the link's target taken from the link's own folder."""
    index = {id(m): i for i, m in enumerate(members)}
    extracted: dict[str, tarfile.TarInfo | None] = {}  # legacy name -> what its open() reads
    linked: dict[str, tarfile.TarInfo] = {}
    for name in (*_LEGACY, "sys_info"):
        opened_from_disk = name in ("storages", "tensors")
        member = next((m for m in reversed(members) if m.name == name), None)
        for _ in range(len(members) + 1):  # a chain visits each member at most once
            if member is None or not (member.islnk() or member.issym()):
                break
            if member.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
                if opened_from_disk:
                    # followed on disk: only a legacy file written before it is there to read
                    member = extracted.get(target) if target in extracted and target != name else None
                    break
                member = next((m for m in reversed(members) if posixpath.normpath(m.name) == target), None)
            else:
                target = posixpath.normpath(member.linkname)
                member = next(
                    (
                        m
                        for m in reversed(members[: index[id(member)]])
                        if posixpath.normpath(m.name) == target
                    ),
                    None,
                )
        else:
            member = None
        if opened_from_disk:
            extracted[name] = member if member is not None and member.isreg() else None
        if member is not None and member.isreg() and member.name != name:
            linked[name] = member
    return linked


def _renamed(info: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    renamed = copy.copy(info)
    renamed.name = name
    return renamed


def _legacy(data: memoryview, regular: list[tarfile.TarInfo], ctx: ReadContext) -> Iterator[Fact]:
    for info in regular:
        ctx.check_time()
        view = data[info.offset_data : info.offset_data + info.size]
        if info.name == "storages":
            yield from _storages(view, ctx)
        elif info.name == "tensors":
            yield from _tensors(view, ctx)
        elif info.name in ("pickle", "sys_info"):
            yield PickleStream(view, 0, f"torch legacy tar {info.name}", member=info.name)
        else:
            yield Nested(info.name, view)


def _storages(view: memoryview, ctx: ReadContext) -> Iterator[Fact]:
    count, pos = _count(view, 0, "storages")
    for index in range(count):
        ctx.check_time()
        yield PickleStream(
            view, pos, "torch legacy tar storages", member="storages", max_pickles=1, trailing_ok=True
        )
        end, storage_class = _scan_pickle(view, pos)
        size = _ELEMENT_SIZES.get(storage_class or "")
        if size is None:
            raise FormatError(
                f"legacy storage {index}: storage type {storage_class!r} is not a known torch storage class",
                offset=pos,
            )
        numel = _unpack(view, end, "<q", f"storage {index} element count")
        raw_end = end + 8 + numel * size
        if numel < 0 or raw_end > len(view):
            raise FormatError(
                f"legacy storage {index}: {numel} elements of {size} bytes from offset {end + 8} run past the "
                f"end of the {len(view)}-byte storages member",
                offset=end,
            )
        pos = raw_end
    if pos >= len(view):
        raise FormatError("legacy storages member ends before its storage views pickle", offset=pos)
    yield PickleStream(view, pos, "torch legacy tar storage views", member="storages", max_pickles=1)
    end, _ = _scan_pickle(view, pos)
    if end != len(view):
        yield Issue(
            "tar.trailing-data",
            Severity.SUSPICIOUS,
            f"{len(view) - end} bytes after the storage views pickle in 'storages', which torch never reads",
            offset=end,
        )


def _tensors(view: memoryview, ctx: ReadContext) -> Iterator[Fact]:
    count, pos = _count(view, 0, "tensors")
    for index in range(count):
        ctx.check_time()
        yield PickleStream(
            view, pos, "torch legacy tar tensors", member="tensors", max_pickles=1, trailing_ok=True
        )
        end, _ = _scan_pickle(view, pos)
        ndim = _unpack(view, end, "<i", f"tensor {index} ndim")
        if not 0 <= ndim <= 64:
            raise FormatError(f"legacy tensor {index}: ndim {ndim} is not between 0 and 64", offset=end)
        pos = end + 8 + 16 * ndim + 8
        if pos > len(view):
            raise FormatError(
                f"legacy tensor {index}: sizes and strides run past the end of the {len(view)}-byte member",
                offset=end,
            )
    if pos != len(view):
        yield Issue(
            "tar.trailing-data",
            Severity.SUSPICIOUS,
            f"{len(view) - pos} bytes after the last tensor record in 'tensors', which torch never reads",
            offset=pos,
        )


def _unpack(view: memoryview, pos: int, fmt: str, what: str) -> int:
    if pos + struct.calcsize(fmt) > len(view):
        raise FormatError(f"legacy {what} at offset {pos} runs past the end of the member", offset=pos)
    value: int = struct.unpack_from(fmt, view, pos)[0]
    return value


def _count(view: memoryview, pos: int, what: str) -> tuple[int, int]:
    """The small integer pickled at ``pos`` (torch writes a bare count) and the end of that pickle."""
    value: int | None = None
    ops = 0
    while True:
        code, arg, pos = decode_op(view, pos)
        ops += 1
        if code == _STOP:
            break
        if code in _INT_OPS and value is None and isinstance(arg, int):
            value = arg
        elif code not in _HEADER_OPS or ops > 3:
            raise FormatError(
                f"legacy {what}: the count pickle holds more than an integer (opcode 0x{code:02x})"
            )
    if value is None or value < 0:
        raise FormatError(f"legacy {what}: the count pickle holds no non-negative integer")
    if value > len(view):
        raise LimitError(f"legacy {what}: count {value} is larger than the {len(view)}-byte member", offset=0)
    return value, pos


def _scan_pickle(view: memoryview, pos: int) -> tuple[int, str | None]:
    """End of the pickle at ``pos`` and the name of the first ``torch.*Storage`` global it names."""
    strings: list[str] = []
    found: str | None = None
    for _ in range(1_000_000):
        code, arg, pos = decode_op(view, pos)
        if code == _STOP:
            return pos, found
        if code in _STRING_OPS and isinstance(arg, str):
            strings = [*strings[-1:], arg]
        elif code in (0x63, 0x69) and isinstance(arg, tuple) and found is None:  # GLOBAL / INST
            module, name = str(arg[0]), str(arg[1])
            found = name if module == "torch" else None
        elif code == 0x93 and len(strings) == 2 and found is None:  # STACK_GLOBAL
            found = strings[1] if strings[0] == "torch" else None
    raise LimitError("legacy record pickle has more than 1,000,000 opcodes", offset=pos)


#: The instance the registry loads (``airlock._formats.registry.READERS``).
READER: Final = TarReader()
