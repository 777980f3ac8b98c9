"""Compressed streams: gzip, bz2, xz, "lzma alone" and zlib (joblib's ``compress=`` files).

Each is recognised by its magic bytes and decompressed *in a bounded way*: output is produced in
chunks and stops at ``max_decompressed_bytes`` (and at the archive total
``max_total_decompressed_bytes``), at ``max_compression_ratio`` times the compressed bytes read
so far, and the LZMA decoder's memory is capped. A bomb is therefore a ``LimitError`` (an ERROR
verdict), never an exhausted host. The result is a :class:`~airlock._formats.base.Nested`
stream (``<gzip>``, ``<bz2>`` ...) that the engine sniffs and scans: usually a pickle (joblib)
or an archive. Concatenated streams are read as one, as Python's ``gzip``/``bz2``/``lzma``
file objects (and so joblib) read them; other bytes after the last stream are a finding.

lz4 and zstd frames are recognised but cannot be decompressed without third-party code: they
are reported as unsupported (ERROR), never passed as clean.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator

from airlock._formats.base import Fact, Issue, Nested, ReadContext
from airlock.errors import FormatError, LimitError
from airlock.results import Severity

#: ``typing.TYPE_CHECKING`` without importing ``typing``: a checkpoint whose storage bytes happen
#: to start like a compressed stream has this reader sniff them (in every scan process)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final, NamedTuple
else:
    from airlock._record import NamedTuple

__all__ = ["COMPRESSED_READERS", "UnsupportedCompressionReader"]

_CHUNK_IN: Final = 1 << 16
_CHUNK_OUT: Final = 1 << 22
#: memory the LZMA decoder may use (its dictionary size comes from the untrusted header)
_LZMA_MEMLIMIT: Final = 256 * 1024 * 1024


def _is_gzip(head: bytes) -> bool:
    return head.startswith(b"\x1f\x8b\x08")


def _is_bz2(head: bytes) -> bool:
    return (
        len(head) >= 10
        and head.startswith(b"BZh")
        and head[3:4] in b"123456789"
        and head[4:10] in (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
    )


def _is_xz(head: bytes) -> bool:
    return head.startswith(b"\xfd7zXZ\x00")


def _is_lzma_alone(head: bytes) -> bool:
    # What joblib.load opens: the prefix 0x5D (lc=3, lp=0, pb=2) and then whatever liblzma's
    # auto decoder (lzma.LZMAFile's FORMAT_AUTO) takes as a .lzma header. That decoder is
    # "picky" only about the dictionary size: 2**n or 2**n + 2**(n-1) after its own rounding
    # (which also lets 0 through, and sizes below the 4 KiB it clamps to), or UINT32_MAX; and the
    # 64-bit size: unknown (all ones) or below 2**38 (this sniff takes below 2**48).
    if len(head) < 13 or head[0] != 0x5D:
        return False
    dict_size: int = struct.unpack_from("<I", head, 1)[0]
    size: int = struct.unpack_from("<Q", head, 5)[0]
    return _liblzma_takes_dict_size(dict_size) and (size == 0xFFFFFFFFFFFFFFFF or size < 1 << 48)


def _liblzma_takes_dict_size(dict_size: int) -> bool:
    # liblzma alone_decoder.c (picky): d = dict_size - 1; d |= d >> 2, 3, 4, 8, 16; ++d; d == dict_size
    if dict_size == 0xFFFFFFFF:
        return True
    d = (dict_size - 1) & 0xFFFFFFFF
    for shift in (2, 3, 4, 8, 16):
        d |= d >> shift
    return (d + 1) & 0xFFFFFFFF == dict_size


def _is_zlib(head: bytes) -> bool:
    # joblib's zlib files: a bare zlib stream, CMF 0x78 (deflate, 32 KiB window), valid FCHECK, no preset dictionary.
    return len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0 and not head[1] & 0x20


class _Kind(NamedTuple):
    name: str
    sniff: Callable[[bytes], bool]
    make: Callable[[], Any]
    #: zlib's API (unconsumed_tail) rather than bz2/lzma's (needs_input)
    zlib_api: bool = False


def _bounded(data: memoryview, kind: _Kind, ctx: ReadContext) -> tuple[bytes, int]:
    """Decompress every concatenated stream from the start of ``data``; (output, bytes consumed)."""
    limits = ctx.limits
    cap = min(limits.max_decompressed_bytes, limits.max_total_decompressed_bytes)
    out = bytearray()
    pos = 0
    while True:
        pos = _one_stream(data, pos, kind, out, cap, ctx)
        rest = bytes(data[pos : pos + 16])
        if pos >= len(data) or not kind.sniff(rest):
            return bytes(out), pos


def _one_stream(data: memoryview, pos: int, kind: _Kind, out: bytearray, cap: int, ctx: ReadContext) -> int:
    import lzma  # only when something is decompressed: a sniff (random weights of a storage) needs none

    limits = ctx.limits
    decomp = kind.make()
    pending = b""
    start = pos
    try:
        while True:
            ctx.check_time()
            room = cap + 1 - len(out)
            if kind.zlib_api:
                if not pending:
                    pending = bytes(data[pos : pos + _CHUNK_IN])
                    pos += len(pending)
                piece = decomp.decompress(pending, min(room, _CHUNK_OUT))
                pending = decomp.unconsumed_tail
                done = decomp.eof
                starved = not pending and pos >= len(data) and not piece
            else:
                chunk = b""
                if decomp.needs_input:
                    chunk = bytes(data[pos : pos + _CHUNK_IN])
                    pos += len(chunk)
                starved = decomp.needs_input and not chunk
                piece = b"" if starved else decomp.decompress(chunk, min(room, _CHUNK_OUT))
                done = decomp.eof
            out += piece
            if len(out) > cap:
                raise LimitError(
                    f"{kind.name} stream expands past {cap} bytes (limit max_decompressed_bytes / "
                    "max_total_decompressed_bytes)",
                    offset=start,
                )
            consumed = max(1, pos - start - len(pending))
            if (
                len(out) > limits.compression_ratio_floor
                and len(out) > consumed * limits.max_compression_ratio
            ):
                raise LimitError(
                    f"{kind.name} stream expands {consumed} bytes to more than {len(out)}, a ratio above "
                    f"{limits.max_compression_ratio} (limit max_compression_ratio)",
                    offset=start,
                )
            if done:
                unused = len(decomp.unused_data)
                return pos - len(pending) - unused
            if starved:
                raise FormatError(
                    f"{kind.name} stream is truncated after {len(out)} bytes of output", offset=start
                )
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as exc:
        if isinstance(exc, lzma.LZMAError) and "Memory usage limit" in str(exc):
            raise LimitError(
                f"{kind.name} stream needs more than {_LZMA_MEMLIMIT} bytes of decoder memory", offset=start
            ) from exc
        raise FormatError(f"{kind.name} stream is corrupt: {exc}", offset=start) from exc


def _bz2() -> Any:
    import bz2  # imported when a bz2 stream is read, not when bytes are sniffed

    return bz2


def _lzma(*, xz: bool) -> Any:
    import lzma  # imported when an xz/lzma stream is read, not when bytes are sniffed

    return lzma.LZMADecompressor(lzma.FORMAT_XZ if xz else lzma.FORMAT_ALONE, memlimit=_LZMA_MEMLIMIT)


class _StreamReader:
    def __init__(self, kind: _Kind) -> None:
        self._kind = kind
        self.name = kind.name

    def sniff(self, head: bytes, size: int) -> bool:
        return self._kind.sniff(head)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        output, consumed = _bounded(data, self._kind, ctx)
        if consumed < len(data):
            yield _trailing(len(data), consumed, f"the last {self.name} stream")
        yield Nested(f"<{self.name}>", output)


def _trailing(size: int, end: int, after: str) -> Issue:
    """``compressed.trailing-data``: bytes from ``end`` to ``size`` that follow ``after``."""
    return Issue(
        "compressed.trailing-data",
        Severity.SUSPICIOUS,
        f"{size - end} bytes after {after}; a place to hide data",
        offset=end,
    )


class UnsupportedCompressionReader:
    """lz4 and zstd frames: recognised, never decompressed, never clean."""

    name = "lz4/zstd"

    def sniff(self, head: bytes, size: int) -> bool:
        return head.startswith((b"\x04\x22\x4d\x18", b"\x28\xb5\x2f\xfd"))

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        which = "lz4" if bytes(data[:1]) == b"\x04" else "zstd"
        yield Issue(
            "format.unsupported",
            Severity.ERROR,
            f"{which}-compressed stream: airlock cannot decompress it with the standard library, so it "
            "cannot be proven clean",
        )


#: joblib <= 0.9's Z-file: b"ZF", the pickle's length as hex in 19 characters, then zlib
_ZFILE_HEADER: Final = 21


class ZFileReader:
    """joblib <= 0.9's "Z-file", which ``joblib.load`` still opens by its ``ZF`` prefix, whatever
    the file's name (``numpy_pickle_compat.read_zfile``): ``ZF``, the pickle's length in hex in 19
    characters (read by ``int(text, 16)``: spaces, ``0x`` and ``_`` allowed), one optional space,
    then a single zlib stream (``zlib.decompress``: bytes after it are ignored) that holds the
    pickle, unpickled from a ``BytesIO``."""

    name = "joblib-zfile"

    def sniff(self, head: bytes, size: int) -> bool:
        return head.startswith(b"ZF")

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        field = bytes(data[2:_ZFILE_HEADER])
        try:
            length = int(field, 16)
        except ValueError:
            # joblib.load fails here, before anything is unpickled; still nothing proven clean
            raise FormatError(f"joblib Z-file length {field!r} is not hexadecimal", offset=2) from None
        start = _ZFILE_HEADER + 1 if bytes(data[_ZFILE_HEADER : _ZFILE_HEADER + 1]) == b" " else _ZFILE_HEADER
        limits = ctx.limits
        cap = min(limits.max_decompressed_bytes, limits.max_total_decompressed_bytes)
        out = bytearray()
        end = _one_stream(data, start, _ZFILE_STREAM, out, cap, ctx)
        if end < len(data):
            yield _trailing(len(data), end, "the joblib Z-file's zlib stream")
        if length != len(out):
            # joblib asserts the length (not under python -O): the pickle is analysed either way
            yield Issue(
                "format.error",
                Severity.ERROR,
                f"joblib Z-file declares {length} bytes, its zlib stream holds {len(out)}",
                offset=2,
            )
        yield Nested(f"<{self.name}>", bytes(out))


_ZFILE_STREAM: Final = _Kind(
    "joblib Z-file zlib", lambda head: False, lambda: zlib.decompressobj(15), zlib_api=True
)

COMPRESSED_READERS: Final = (
    _StreamReader(_Kind("gzip", _is_gzip, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), zlib_api=True)),
    _StreamReader(_Kind("bz2", _is_bz2, lambda: _bz2().BZ2Decompressor())),
    _StreamReader(_Kind("xz", _is_xz, lambda: _lzma(xz=True))),
    _StreamReader(_Kind("lzma", _is_lzma_alone, lambda: _lzma(xz=False))),
    _StreamReader(_Kind("zlib", _is_zlib, lambda: zlib.decompressobj(zlib.MAX_WBITS), zlib_api=True)),
    UnsupportedCompressionReader(),
    ZFileReader(),
)
