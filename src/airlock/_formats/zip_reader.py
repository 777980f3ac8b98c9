"""The zip reader: torch archives, TorchScript archives, and every other zip (npz, bundles ...).

Built on the shared directory parser in :mod:`airlock._formats.zip`, whose differentials are
reported first. Then, by content and layout (never by the file's suffix):

* **torch archive** — every member under one top folder ``<p>/`` and a ``<p>/data.pkl``
  (matched case-insensitively, as torch looks it up). ``data.pkl`` is the main pickle; every
  other member that looks like a pickle is analysed too, whatever its name. Tensor storages
  ``<p>/data/<key>`` are raw bytes torch never unpickles: they are analysed leniently only when
  they start like a pickle. ``byteorder`` and the version records must hold what torch writes.
  Members that are not pickles are scanned as nested files (a hidden ``.npy`` or zip).
* **TorchScript** — a torch archive with ``code/`` or ``constants.pkl``: executable code,
  reported as such, and its source scanned for operators that touch files or the network.
* **any other zip** — every member is a nested file the engine sniffs and scans.

Decompression is bounded per member (``max_decompressed_bytes``, ``max_compression_ratio``) and
per archive (``max_total_decompressed_bytes``). The CRC is checked for every member whose bytes
are read in full (torch ignores it; zipfile refuses a mismatch).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator

from airlock._formats.base import Fact, Issue, Nested, PickleStream, ReadContext
from airlock._formats.pickle import looks_like_pickle
from airlock._formats.zip import (
    STORED,
    ZipListing,
    ZipMember,
    looks_like_zip,
    member_bytes,
    member_head,
    parse_zip,
)
from airlock.errors import FormatError, LimitError
from airlock.limits import Limits
from airlock.results import Severity

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["ZipReader"]

_HEAD: Final = 4096
#: records torch writes as short text, and what they must look like
_RECORDS: Final = {
    "byteorder": re.compile(rb"(little|big)"),
    "version": re.compile(rb"\d{1,4}\n?"),
    ".format_version": re.compile(rb"\d{1,4}\n?"),
    ".storage_alignment": re.compile(rb"\d{1,8}\n?"),
    ".data/version": re.compile(rb"\d{1,4}\n?"),
    ".data/serialization_id": re.compile(rb"[0-9a-fA-F]{1,64}"),
}
_MAX_NAMED: Final = 10


class ZipReader:
    name = "zip"

    def sniff(self, head: bytes, size: int) -> bool:
        return looks_like_zip(head)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        listing = parse_zip(data, ctx.limits, ctx.check_time)
        yield from listing.issues
        budget = _Budget(ctx.limits)
        prefix = _torch_prefix(listing)
        if prefix is None:
            # Keras' load_model opens config.json by name, whatever the member order (which is
            # all the KerasZipReader's sniff looks at) or the file's name: read it as Keras does.
            from airlock._formats import keras  # keras imports zip; imported here, not at load

            if keras.is_keras_listing(listing, ctx.limits):
                yield from keras.read_keras_listing(listing, ctx)
                return
            for member in listing.members:
                ctx.check_time()
                if not member.is_dir:
                    yield from _nested(listing, member, budget)
            return
        yield from _read_torch(listing, prefix, ctx, budget)


class _Budget:
    """Total bytes decompressed for one archive (stored members are views and cost nothing)."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._spent = 0

    def read(self, listing: ZipListing, member: ZipMember) -> memoryview | bytes:
        if member.method != STORED:
            total = self._spent + member.uncompressed_size
            if total > self._limits.max_total_decompressed_bytes:
                raise LimitError(
                    f"member {member.name!r} would bring the archive's decompressed total to {total} bytes, "
                    f"more than {self._limits.max_total_decompressed_bytes} (limit max_total_decompressed_bytes)",
                    offset=member.header_offset,
                )
        content = member_bytes(listing, member, self._limits)
        if member.method != STORED:
            self._spent += len(content)
        return content


def _torch_prefix(listing: ZipListing) -> str | None:
    """The top folder, when the archive has torch's layout (torch takes it from the first entry)."""
    if not listing.members or "/" not in listing.members[0].name:
        return None
    prefix = listing.members[0].name.split("/", 1)[0]
    if not all(m.name.startswith(prefix + "/") for m in listing.members):
        return None  # torch refuses such an archive; read it as a plain zip (every member scanned)
    if not listing.find(f"{prefix}/data.pkl", case_insensitive=True):
        return None
    return prefix


def _read_torch(listing: ZipListing, prefix: str, ctx: ReadContext, budget: _Budget) -> Iterator[Fact]:
    main = {m.index for m in listing.find(f"{prefix}/data.pkl", case_insensitive=True)}
    code: list[ZipMember] = []
    torchscript = False
    for member in listing.members:
        ctx.check_time()
        rel = member.name[len(prefix) + 1 :]
        if member.is_dir:
            continue
        if rel == "constants.pkl" or rel.startswith("code/"):
            torchscript = True
        if rel.startswith("code/") and rel.endswith(".py"):
            code.append(member)
            continue
        if member.index in main:
            # torch unpickles it whatever it looks like.
            yield from _pickle(listing, member, budget, "main", lenient=False)
        elif rel.startswith("data/") and "/" not in rel[5:]:
            yield from _storage(listing, member, budget)
        elif rel in _RECORDS:
            yield from _record(listing, member, rel, budget)
        else:
            # Any other member, pickle or not, is sniffed and scanned as a nested file, so its
            # findings are located at the member (a pickle named .txt is still read as a pickle).
            yield from _nested(listing, member, budget)
    if torchscript:
        yield from _torchscript(listing, code, budget)


def _content(listing: ZipListing, member: ZipMember, budget: _Budget) -> Iterator[Fact | memoryview | bytes]:
    """The member's bytes (yielded last), after an issue for a bad CRC; errors become issues."""
    try:
        content = budget.read(listing, member)
    except LimitError as exc:
        yield Issue("limit.exceeded", Severity.ERROR, f"member {member.name!r}: {exc}", offset=exc.offset)
        return
    except FormatError as exc:
        yield Issue("format.error", Severity.ERROR, f"zip: {exc}", offset=exc.offset)
        return
    crc = zlib.crc32(content)
    if crc != member.crc32:
        yield Issue(
            "zip.bad-crc",
            Severity.SUSPICIOUS,
            f"member {member.name!r}: CRC 0x{crc:08x} does not match the recorded 0x{member.crc32:08x}; "
            "torch ignores it, zipfile refuses the member",
            offset=member.header_offset,
        )
    yield content


def _pickle(
    listing: ZipListing, member: ZipMember, budget: _Budget, role: str, *, lenient: bool
) -> Iterator[Fact]:
    for item in _content(listing, member, budget):
        if isinstance(item, memoryview | bytes):
            view = item if isinstance(item, memoryview) else memoryview(item)
            yield PickleStream(view, 0, f"{role} {member.name}", member=member.name, lenient=lenient)
        else:
            yield item


def _storage(listing: ZipListing, member: ZipMember, budget: _Budget) -> Iterator[Fact]:
    try:
        head = bytes(member_head(listing, member, _HEAD))
    except FormatError as exc:
        yield Issue("format.error", Severity.ERROR, f"zip: {exc}", offset=exc.offset)
        return
    # Raw tensor bytes that start like a pickle: torch never unpickles them, but other loaders of
    # a renamed member might; report what they would import, not parse errors. Bytes that start
    # like a file another loader opens by its magic (joblib.load decompresses gzip/zlib/bz2/xz/
    # lzma/lz4 and the Z-file and unpickles; numpy.load and torch.load open npy, zip and tar):
    # scanned as that file; that they do not parse is no finding (raw bytes). Both, when both
    # hold: a tar whose first member's name is a pickle ("N.") is also what torch.load opens.
    pickle_like = looks_like_pickle(head, member.uncompressed_size)
    claimed = _claimed(head, member.uncompressed_size)
    if not pickle_like and not claimed:
        return
    for item in _content(listing, member, budget):
        if not isinstance(item, memoryview | bytes):
            yield item
            continue
        if pickle_like:
            view = item if isinstance(item, memoryview) else memoryview(item)
            yield PickleStream(view, 0, f"storage {member.name}", member=member.name, lenient=True)
        if claimed:
            yield Nested(member.name, item, raw=True)


def _claimed(head: bytes, size: int) -> bool:
    """Whether ``head`` (a pickle's start or not: a polyglot is read both ways) starts a file
    that a loader running code opens by content alone (``Format.raw_loaded``: joblib's compressed
    pickles, npy/npz, zip). Other formats' loaders run no code from raw bytes, and reading their
    readers in for random weights cost a one-file scan ~15 ms of imports (protobuf, JSON, ...)."""
    from airlock._formats.registry import raw_loaded  # the registry names this module's reader

    return raw_loaded(head, size)


def _record(listing: ZipListing, member: ZipMember, rel: str, budget: _Budget) -> Iterator[Fact]:
    # a stored member holds as many bytes as it declares; one that does not is no record torch wrote
    # (and its extra bytes would go unread): reported, and scanned as a nested file, which refuses it
    sized = member.method != STORED or member.compressed_size == member.uncompressed_size
    if member.uncompressed_size <= 64 and sized:
        # torch reads deflated records too (a zip written with every member deflated loads)
        content = (
            member_head(listing, member, 64)
            if member.method == STORED
            else bytes(budget.read(listing, member))[:64]
        )
        if _RECORDS[rel].fullmatch(content):
            return
        detail = f"holds {content[:64]!r}"
    elif not sized:
        detail = f"is stored as {member.compressed_size} bytes but declares {member.uncompressed_size}"
    else:
        detail = f"is {member.uncompressed_size} bytes (method {member.method})"
    yield Issue(
        "torch.bad-record",
        Severity.SUSPICIOUS,
        f"torch record {member.name!r} {detail}, not what torch writes",
        offset=member.header_offset,
    )
    yield from _nested(listing, member, budget)


def _nested(listing: ZipListing, member: ZipMember, budget: _Budget) -> Iterator[Fact]:
    for item in _content(listing, member, budget):
        yield Nested(member.name, item) if isinstance(item, memoryview | bytes) else item


def _torchscript(listing: ZipListing, code: list[ZipMember], budget: _Budget) -> Iterator[Fact]:
    from airlock._formats.torchscript import dangerous_ops  # only for TorchScript archives

    names = ", ".join(m.name for m in code[:_MAX_NAMED]) + (
        f" and {len(code) - _MAX_NAMED} more" if len(code) > _MAX_NAMED else ""
    )
    yield Issue(
        "torchscript.code",
        Severity.SUSPICIOUS,
        f"TorchScript archive: torch.jit.load compiles and runs its code ({names or 'no code files'}); "
        "load it only inside the sandbox",
        evidence=names or None,
    )
    for member in code:
        for item in _content(listing, member, budget):
            if not isinstance(item, memoryview | bytes):
                yield item
                continue
            try:
                source = bytes(item).decode("utf-8")
            except UnicodeDecodeError:
                yield Issue(
                    "format.error", Severity.ERROR, f"TorchScript code {member.name!r} is not UTF-8 text"
                )
                continue
            for use in dangerous_ops(source):
                yield Issue(
                    "torchscript.dangerous-op",
                    Severity.MALICIOUS,
                    f"TorchScript code {member.name!r} line {use.line} uses {use.op}: {use.label}",
                    offset=member.data_offset,
                    callable=use.op,
                    evidence=use.text,
                )


#: The instance the registry loads (``airlock._formats.registry.READERS``).
READER: Final = ZipReader()
