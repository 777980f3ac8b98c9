"""safetensors: strict validation of the header, the only part of the file a scan reads.

Layout: an 8-byte little-endian header length ``n``, ``n`` bytes of UTF-8 JSON (an object mapping
tensor names to ``{"dtype", "shape", "data_offsets"}`` plus an optional ``__metadata__`` object of
strings), then the data region. ``data_offsets`` are relative to the start of the data region.

The format runs no code; what an attacker can do is lie in the header: offsets that overlap (two
tensors alias the same bytes), point past the end (a loader that does not validate reads out of
bounds), leave gaps or trailing bytes (room for a second payload a different loader reads), sizes
that disagree with shape x dtype, duplicate keys (two JSON parsers keep different values). The
reference loader rejects all of these; airlock reports them so they never pass as clean.

Tensor bytes are never touched: a multi-gigabyte file costs one header read.
"""

from __future__ import annotations

from collections.abc import Iterator

from airlock._formats.base import Fact, Issue, ReadContext
from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError, LimitError
from airlock.results import Severity

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (annotations only): a scan of a tree with
#: safetensors files paid ~2 ms for it, in every process
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["DTYPE_BITS", "SafetensorsReader"]

#: Every dtype the reference implementation knows (safetensors 0.8), with its size in bits.
DTYPE_BITS: Final[dict[str, int]] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

_TENSOR_KEYS: Final = frozenset({"dtype", "shape", "data_offsets"})
_METADATA: Final = "__metadata__"
# The reference writer pads the header with spaces; JSON allows any whitespace there.
_SNIFF_MAX_HEADER: Final = 1 << 32


def _show(name: str, limit: int = 80) -> str:
    """A name fit for a message: repr-escaped and cut."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 3] + "...'"


def _bytes(n: int) -> str:
    if n < 10_000:
        return f"{n} bytes"
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"  # pragma: no cover - loop always returns for n >= 10_000


#: the reference parser reads shapes and offsets as Rust ``usize`` (64-bit); larger values fail there
_USIZE_MAX: Final = 2**64 - 1


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _USIZE_MAX


class SafetensorsReader:
    name = "safetensors"

    def sniff(self, head: bytes, size: int) -> bool:
        # The length must be plausible and the header must open with '{' (after whitespace). A header length that
        # overruns the file is still claimed, so a truncated file gets a precise error. With the
        # length below 2**32, bytes 4..7 are zero: no pickle can be hidden in the prefix (the
        # 0x00 byte is not a pickle opcode, and four bytes cannot name and call a global).
        # The reference parser (serde_json) accepts JSON whitespace before the object, so do we.
        if len(head) < 10 or not head[8:].lstrip(b" \t\r\n").startswith(b"{"):
            return False
        length = int.from_bytes(head[:8], "little")
        return 2 <= length < _SNIFF_MAX_HEADER

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        size = len(data)
        if size < 8:
            raise FormatError(f"file of {size} bytes is shorter than the 8-byte header length", offset=0)
        length = int.from_bytes(data[:8], "little")
        if length > ctx.limits.max_header_bytes:
            raise LimitError(
                f"header length {_bytes(length)} exceeds limit max_header_bytes {_bytes(ctx.limits.max_header_bytes)}",
                offset=0,
            )
        if 8 + length > size:
            raise FormatError(
                f"header length {_bytes(length)} exceeds file size {_bytes(size)} minus the 8-byte prefix",
                offset=0,
            )
        header = parse_json_strict(bytes(data[8 : 8 + length]), "safetensors header", offset=8)
        if not isinstance(header, dict):
            raise FormatError(f"header is a JSON {type(header).__name__}, expected an object", offset=8)
        data_size = size - 8 - length
        yield from _check_metadata(header.get(_METADATA))
        spans: list[tuple[int, int, str]] = []
        for index, (name, info) in enumerate(header.items()):
            if index % 4096 == 0:
                ctx.check_time()
            if name == _METADATA:
                continue
            span, issues = _check_tensor(name, info)
            yield from issues
            if span is not None:
                spans.append((span[0], span[1], name))
        yield from _check_layout(spans, data_size, 8 + length)


def _schema(message: str) -> Issue:
    return Issue("safetensors.header-schema", Severity.ERROR, message, offset=8)


def _check_metadata(metadata: object) -> Iterator[Issue]:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        yield _schema(f"__metadata__ is a JSON {type(metadata).__name__}, expected an object of strings")
        return
    for key, value in metadata.items():
        if not isinstance(value, str):
            yield Issue(
                "safetensors.metadata-type",
                Severity.ERROR,
                f"__metadata__[{_show(key)}] is a JSON {type(value).__name__}, expected a string",
                offset=8,
            )


def _check_tensor(name: str, info: object) -> tuple[tuple[int, int] | None, list[Issue]]:
    """Validate one tensor entry. Returns its data span (when the offsets are usable) and issues."""
    label = f"tensor {_show(name)}"
    if not isinstance(info, dict):
        return None, [_schema(f"{label}: entry is a JSON {type(info).__name__}, expected an object")]
    issues: list[Issue] = []
    keys = set(info)
    if keys != _TENSOR_KEYS:
        missing = sorted(_TENSOR_KEYS - keys)
        extra = sorted(keys - _TENSOR_KEYS)
        shown = ", ".join(_show(k, 40) for k in extra[:5])
        issues.append(_schema(f"{label}: keys missing {missing}, unexpected [{shown}]"))
    offsets = info.get("data_offsets")
    span: tuple[int, int] | None = None
    if isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(v) for v in offsets):
        begin, end = offsets
        if begin > end:
            issues.append(
                Issue(
                    "safetensors.offsets",
                    Severity.ERROR,
                    f"{label}: data_offsets begin {begin} is after end {end}",
                    offset=8,
                )
            )
        else:
            span = (begin, end)
    elif "data_offsets" in info:
        issues.append(
            _schema(f"{label}: data_offsets must be two integers in 0..2**64-1, got {offsets!r:.80}")
        )
    dtype = info.get("dtype")
    bits = DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
    if bits is None and "dtype" in info:
        issues.append(
            Issue("safetensors.dtype", Severity.ERROR, f"{label}: unknown dtype {dtype!r:.40}", offset=8)
        )
    shape = info.get("shape")
    shape_ok = isinstance(shape, list) and all(_is_uint(d) for d in shape)
    if not shape_ok and "shape" in info:
        issues.append(_schema(f"{label}: shape must be a list of integers in 0..2**64-1, got {shape!r:.80}"))
    if bits is not None and shape_ok and span is not None:
        assert isinstance(shape, list)
        span_bytes = span[1] - span[0]
        # Exact up to 2**64 elements (the reference overflows past that); beyond, only "too many".
        elements = _elements(shape, 1 << 64)
        total_bits = elements * bits
        if elements > 1 << 64:
            issues.append(
                Issue(
                    "safetensors.size-mismatch",
                    Severity.ERROR,
                    f"{label}: shape {_shape(shape)} x {dtype} needs more than the {span_bytes} bytes "
                    "its data_offsets span",
                    offset=8,
                )
            )
        elif total_bits % 8:
            issues.append(
                Issue(
                    "safetensors.size-mismatch",
                    Severity.ERROR,
                    f"{label}: shape {_shape(shape)} x {dtype} is {total_bits} bits, not a whole number of bytes",
                    offset=8,
                )
            )
        elif total_bits // 8 != span_bytes:
            issues.append(
                Issue(
                    "safetensors.size-mismatch",
                    Severity.ERROR,
                    f"{label}: shape {_shape(shape)} x {dtype} is {total_bits // 8} bytes "
                    f"but data_offsets span {span_bytes} bytes",
                    offset=8,
                )
            )
    return span, issues


def _elements(shape: list[int], cap: int) -> int:
    """Product of ``shape``; stops growing past ``cap`` (returns a value above it) unless a 0 follows."""
    if 0 in shape:
        return 0
    product = 1
    for dim in shape:
        product *= dim
        if product > cap:
            return cap + 1
    return product


def _shape(shape: list[int]) -> str:
    text = str(shape)
    return text if len(text) <= 60 else text[:57] + "...]"


def _check_layout(spans: list[tuple[int, int, str]], data_size: int, data_start: int) -> Iterator[Issue]:
    """Offsets must tile the data region exactly: from 0, no overlap, no gap, nothing trailing."""
    spans.sort()
    covered = 0
    last_name: str | None = None
    for begin, end, name in spans:
        label = f"tensor {_show(name)}"
        if end > data_size:
            yield Issue(
                "safetensors.out-of-bounds",
                Severity.ERROR,
                f"{label}: data_offsets end {_bytes(end)} exceeds the data region of {_bytes(data_size)}",
                offset=data_start,
            )
        if begin < covered:
            yield Issue(
                "safetensors.overlap",
                Severity.MALICIOUS,
                f"{label}: data_offsets [{begin}, {end}] overlap the bytes of tensor "
                f"{_show(last_name or '')} (covered up to {covered}); tensors must not alias",
                offset=data_start + begin,
                evidence=f"{name}@[{begin},{end}] overlaps {last_name}",
            )
        elif begin > covered:
            yield Issue(
                "safetensors.gap",
                Severity.ERROR,
                f"{label}: data_offsets begin {begin} leaves a gap of {begin - covered} unreferenced bytes "
                f"after offset {covered}",
                offset=data_start + covered,
            )
        if end > covered:
            covered = end
            last_name = name
    if covered < data_size:
        yield Issue(
            "safetensors.trailing",
            Severity.ERROR,
            f"{data_size - covered} bytes after the last tensor (data region {_bytes(data_size)}, "
            f"tensors cover {_bytes(covered)})",
            offset=data_start + covered,
        )


#: The instance the registry loads (``airlock._formats.registry.READERS``).
READER: Final = SafetensorsReader()
