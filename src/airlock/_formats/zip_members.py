"""Member extraction: a member's bytes, a zero-copy view when stored, bounded decompression
otherwise (deflate, bzip2 and LZMA — the methods Python's zipfile, and so numpy and Keras, read).

Every decompressor is the standard library's C one, asked for at most the declared size plus one
byte; sizes and ratios are checked against the limits before anything is decompressed.
"""

from __future__ import annotations

import struct
import zlib

from airlock._formats.zip_model import (
    BZIP2,
    COMPRESSED,
    DEFLATED,
    LZMA,
    METHOD_NAMES,
    STORED,
    ZipListing,
    ZipMember,
    method_label,
)
from airlock.errors import FormatError, LimitError
from airlock.limits import Limits

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    import lzma
    from typing import Any, Final

__all__ = ["member_bytes", "member_head"]

_LZMA_PROPS: Final = 5
#: (pb=4 * 5 + lp=4) * 9 + lc=8: the largest LZMA1 properties byte liblzma accepts
_LZMA_MAX_LCLPPB: Final = (4 * 5 + 4) * 9 + 8
_LZMA_MIN_DICT: Final = 4096
#: what a corrupt stream raises (``_Decoder`` turns lzma's own LZMAError into ValueError: bz2 and
#: lzma are imported only for members that use them, never by a scan of a torch checkpoint)
_DECODE_ERRORS: Final = (zlib.error, OSError, EOFError, ValueError)


def member_head(listing: ZipListing, member: ZipMember, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of the member's content (for sniffing)."""
    src = listing.data[member.data_offset : member.data_end]
    if member.method == STORED:
        return bytes(src[:limit])
    decoder = _decoder(src, member, limit + 1)  # the window never needs more than the output
    try:
        return decoder.decompress(src, limit)
    except _DECODE_ERRORS as exc:
        raise FormatError(
            f"member {member.name!r}: {METHOD_NAMES[member.method]} stream is corrupt: {exc}"
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
            f"member {member.name!r}: unsupported compression method {method_label(member.method)}",
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
            f"member {member.name!r}: {METHOD_NAMES[member.method]} stream is corrupt: {exc}",
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
            f"member {member.name!r}: {METHOD_NAMES[member.method]} stream ends after {len(out)} of {declared} bytes",
            offset=member.data_offset,
        )
    return out


class _Decoder:
    """One member's decompressor behind one interface; output bounded by ``max_length``."""

    def __init__(
        self, obj: Any, skip: int, *, inflate: bool = False, error: type[Exception] = ValueError
    ) -> None:
        self._obj = obj
        self._skip = skip
        self._error = error
        #: zlib's API reports leftover input as unconsumed_tail, bz2/lzma as needs_input
        self._inflate = inflate
        self.drained = False

    @property
    def eof(self) -> bool:
        return bool(self._obj.eof)

    def decompress(self, src: memoryview, max_length: int) -> bytes:
        try:
            out: bytes = self._obj.decompress(src[self._skip :], max_length)
        except self._error as exc:
            raise ValueError(str(exc)) from exc
        self.drained = not self._obj.unconsumed_tail if self._inflate else bool(self._obj.needs_input)
        return out


def _decoder(src: memoryview, member: ZipMember, most: int) -> _Decoder:
    """A decompressor for ``member`` that never needs a window larger than ``most`` output bytes."""
    if member.method == DEFLATED:
        return _Decoder(zlib.decompressobj(-15), 0, inflate=True)
    if member.method == BZIP2:
        import bz2

        return _Decoder(bz2.BZ2Decompressor(), 0)
    if member.method == LZMA:
        import lzma

        return _Decoder(_lzma(src, member, most), 4 + _LZMA_PROPS, error=lzma.LZMAError)
    raise FormatError(
        f"member {member.name!r}: unsupported compression method {method_label(member.method)}",
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
    import lzma

    filters = [{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": window}]
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)
