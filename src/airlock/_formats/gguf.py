"""GGUF v2/v3 (llama.cpp): metadata and tensor infos validated; chat templates handed on for analysis.

Layout (little-endian): magic ``GGUF``, u32 version, u64 tensor count, u64 metadata count, the
metadata key/value pairs (u64-length strings, u32 value types, arrays as u32 type + u64 length),
the tensor infos (name, u32 n_dims, u64 dims, u32 ggml type, u64 offset), padding to
``general.alignment`` (default 32), then the tensor data.

Counts and lengths are the fields published heap overflows in GGUF parsers used (a tensor or
metadata count, a string or array length that the parser trusts and allocates for). Each is
checked against the bytes that remain *before* anything is read or allocated: a value that needs
more bytes than the whole file holds cannot come from truncation and is MALICIOUS; one that only
overruns the remaining bytes is an ERROR (a truncated download looks like that).

Only the metadata and tensor infos are read: the tensor bytes are never touched. String arrays
(vocabularies of 100k+ tokens) are skipped over without decoding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

from airlock._formats.base import Fact, Issue, ReadContext, Template
from airlock.errors import FormatError, LimitError
from airlock.results import Severity

__all__ = ["GGML_TYPES", "VALUE_SIZES", "GGUFReader", "is_template_key"]

_MAGIC: Final = b"GGUF"
_VERSIONS: Final = frozenset({2, 3})
_DEFAULT_ALIGNMENT: Final = 32
#: llama.cpp's GGML_MAX_DIMS
_MAX_DIMS: Final = 4

# Metadata value types.
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY = range(10)
_UINT64, _INT64, _FLOAT64 = 10, 11, 12
#: fixed-size value types and their sizes in bytes
VALUE_SIZES: Final[dict[int, int]] = {
    _UINT8: 1, _INT8: 1, _UINT16: 2, _INT16: 2, _UINT32: 4, _INT32: 4, _FLOAT32: 4, _BOOL: 1,
    _UINT64: 8, _INT64: 8, _FLOAT64: 8,
}  # fmt: skip
_TYPE_NAMES: Final = (
    "UINT8 INT8 UINT16 INT16 UINT32 INT32 FLOAT32 BOOL STRING ARRAY UINT64 INT64 FLOAT64".split()
)
# Smallest encodings, used to reject counts before reading: a key/value pair (empty key, u32
# type, one-byte value), a tensor info (empty name, n_dims, no dims, type, offset), an array.
_MIN_KV: Final = 8 + 4 + 1
_MIN_TENSOR_INFO: Final = 8 + 4 + 4 + 8
_MIN_ARRAY: Final = 4 + 8

#: ggml tensor types: id -> (name, elements per block, bytes per block). Removed ids are absent.
GGML_TYPES: Final[dict[int, tuple[str, int, int]]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}  # fmt: skip

_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_TEMPLATE_KEY: Final = "tokenizer.chat_template"
_COUNT: Final = "gguf.count-exceeds-file"
_CHUNK: Final = 1 << 20
_TRUNCATED: Final = "gguf.truncated"


class _Stop(Exception):
    """A structural finding after which the rest of the header cannot be trusted."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.message)
        self.issue = issue


def _looks_like_jinja(text: str) -> bool:
    return ("{%" in text and "%}" in text) or ("{{" in text and "}}" in text)


def _bytes_look_like_jinja(raw: memoryview) -> bool:
    """:func:`_looks_like_jinja` on bytes, read in bounded chunks (one byte of overlap)."""
    found: set[bytes] = set()
    for start in range(0, len(raw), _CHUNK):
        chunk = bytes(raw[start : start + _CHUNK + 1])
        found.update(marker for marker in (b"{%", b"%}", b"{{", b"}}") if marker in chunk)
    return {b"{%", b"%}"} <= found or {b"{{", b"}}"} <= found


def _oversized(key: str, size: int, offset: int, limit: int) -> Issue:
    return Issue(
        "template.parse",
        Severity.ERROR,
        f"template {_shown(key)}: {size} bytes exceeds limit max_template_bytes {limit}",
        offset=offset,
    )


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.size = len(data)
        self.pos = 0

    def need(self, count: int, unit: int, what: str, rule: str = "gguf.length-exceeds-file") -> None:
        """``count`` items of at least ``unit`` bytes must fit in what remains, else stop."""
        required = count * unit
        remaining = self.size - self.pos
        if required <= remaining:
            return
        beyond_file = required > self.size
        raise _Stop(
            Issue(
                rule,
                Severity.MALICIOUS if beyond_file else Severity.ERROR,
                f"{what} {count} needs at least {required} bytes but only {remaining} remain "
                f"(file size {self.size})"
                + (
                    "; larger than the whole file, a crafted value (parser heap-overflow class)"
                    if beyond_file
                    else ""
                ),
                offset=self.pos,
                evidence=f"{what}={count}",
            )
        )

    def u32(self) -> int:
        self.need(1, 4, "u32 field", _TRUNCATED)
        value: int = _U32.unpack_from(self.data, self.pos)[0]
        self.pos += 4
        return value

    def u64(self) -> int:
        self.need(1, 8, "u64 field", _TRUNCATED)
        value: int = _U64.unpack_from(self.data, self.pos)[0]
        self.pos += 8
        return value

    def skip(self, count: int, unit: int, what: str, rule: str = "gguf.length-exceeds-file") -> None:
        self.need(count, unit, what, rule)
        self.pos += count * unit

    def string(self, what: str) -> memoryview:
        length = self.u64()
        start = self.pos
        self.skip(length, 1, f"{what} length")
        return self.data[start : start + length]


def _text(raw: memoryview, what: str, offset: int) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"{what} is not valid UTF-8 at byte {exc.start}", offset=offset + exc.start
        ) from exc


class GGUFReader:
    name = "gguf"

    def sniff(self, head: bytes, size: int) -> bool:
        return head.startswith(_MAGIC)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        cur = _Cursor(data)
        try:
            yield from _read(cur, ctx)
        except _Stop as stop:
            yield stop.issue


def _read(cur: _Cursor, ctx: ReadContext) -> Iterator[Fact]:
    if cur.size < 24:
        raise FormatError(f"file of {cur.size} bytes is shorter than the 24-byte GGUF header", offset=0)
    cur.pos = 4
    version = cur.u32()
    if version not in _VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        hint = " (byte-swapped: a big-endian GGUF, not supported)" if swapped in _VERSIONS else ""
        raise FormatError(f"GGUF version {version} is not supported, expected 2 or 3{hint}", offset=4)
    n_tensors = cur.u64()
    n_kv = cur.u64()
    cur.need(n_kv, _MIN_KV, "metadata count", _COUNT)
    cur.need(n_tensors, _MIN_TENSOR_INFO, "tensor count", _COUNT)
    alignment = _DEFAULT_ALIGNMENT
    keys: set[str] = set()
    #: keys as llama.cpp sees them (cut at the first NUL) -> the full key first seen
    c_keys: dict[str, str] = {}
    for index in range(n_kv):
        if index % 1024 == 0:
            ctx.check_time()
        key_at = cur.pos
        key = _text(cur.string("key"), "metadata key", key_at + 8)
        if key in keys:
            yield Issue(
                "gguf.duplicate-key",
                Severity.ERROR,
                f"metadata key {key!r:.80} appears twice (loaders disagree on which value wins)",
                offset=key_at,
            )
        elif (c_key := key.split("\0", 1)[0]) in c_keys:
            yield Issue(
                "gguf.duplicate-key",
                Severity.ERROR,
                f"metadata keys {c_keys[c_key]!r:.80} and {key!r:.80} are the same key to llama.cpp, which "
                "cuts keys at the first NUL and keeps the first; gguf-py and transformers keep both",
                offset=key_at,
            )
        keys.add(key)
        c_keys.setdefault(key.split("\0", 1)[0], key)
        vtype = cur.u32()
        value_at = cur.pos
        if vtype == _STRING:
            raw = cur.string(f"string {key!r:.60}")
            if len(raw) > ctx.limits.max_template_bytes:
                # Too large to analyse; never decoded (a huge string would cost memory). A template
                # key, or any string that looks like a template, is an error — never skipped.
                if is_template_key(key) or _bytes_look_like_jinja(raw):
                    yield _oversized(key, len(raw), value_at, ctx.limits.max_template_bytes)
            elif is_template_key(key):
                yield Template(
                    _shown(key), _text(raw, f"template {key!r:.60}", value_at + 8), offset=value_at
                )
            else:
                # any other string that looks like a template is analysed too
                text = bytes(raw).decode("utf-8", "replace")
                if _looks_like_jinja(text):
                    yield Template(_shown(key), text, offset=value_at)
        elif vtype == _ARRAY and is_template_key(key):
            yield from _template_array(cur, ctx, key)
        elif vtype == _ARRAY:
            _skip_array(cur, ctx, key, depth=1)
        elif vtype in VALUE_SIZES:
            size = VALUE_SIZES[vtype]
            cur.skip(1, size, f"value of {key!r:.60}")
            if key == "general.alignment":
                alignment = _alignment(cur, vtype, value_at)
            elif vtype == _BOOL and cur.data[value_at] > 1:
                yield Issue(
                    "gguf.value",
                    Severity.ERROR,
                    f"metadata {key!r:.60}: BOOL byte is {cur.data[value_at]}, expected 0 or 1",
                    offset=value_at,
                )
        else:
            raise _Stop(_value_type_issue(key, vtype, value_at - 4))
    yield from _tensor_infos(cur, ctx, n_tensors, alignment)


#: control characters in keys are shown escaped (a NUL in a key is the point of some attacks)
_CONTROL: Final = {c: f"\\x{c:02x}" for c in range(32)} | {0: "\\0"}


def _shown(key: str) -> str:
    return key.translate(_CONTROL)


def is_template_key(key: str) -> bool:
    """A key some loader reads a chat template from: ``tokenizer.chat_template`` or a named one
    (``tokenizer.chat_template.<name>``), as llama.cpp and llama-cpp-python see it — cut at the
    first NUL (``gguf_get_key`` returns a C string), so ``tokenizer.chat_template\\0x`` counts."""
    key = key.split("\0", 1)[0]
    return key == _TEMPLATE_KEY or key.startswith(_TEMPLATE_KEY + ".")


def _template_array(cur: _Cursor, ctx: ReadContext, key: str) -> Iterator[Fact]:
    """A chat template stored as an array. transformers (gguf-py) unwraps a one-element array into
    the template string; other consumers may join the pieces. Every string element is analysed,
    and the elements joined; arrays of anything else hold no template and are skipped."""
    type_at = cur.pos
    etype = cur.u32()
    if etype != _STRING:
        cur.pos = type_at
        _skip_array(cur, ctx, key, depth=1)
        return
    length = cur.u64()
    cur.need(length, 8, f"array {key!r:.60} element count", _COUNT)
    pieces: list[str] = []
    total = 0
    for index in range(length):
        if index & 0xFFF == 0xFFF:
            ctx.check_time()
        at = cur.pos
        raw = cur.string(f"template {key!r:.60} element {index}")
        total += len(raw)
        if total > ctx.limits.max_template_bytes:
            raise LimitError(
                f"template {key!r:.60} stored as an array holds more than {ctx.limits.max_template_bytes} "
                "bytes (limit max_template_bytes)",
                offset=at,
            )
        text = _text(raw, f"template {key!r:.60} element {index}", at + 8)
        pieces.append(text)
        yield Template(f"{_shown(key)}[{index}]", text, offset=at)
    if len(pieces) > 1:
        yield Template(f"{_shown(key)} (elements joined)", "".join(pieces), offset=type_at)


def _value_type_issue(key: str, vtype: int, offset: int) -> Issue:
    return Issue(
        "gguf.value-type",
        Severity.ERROR,
        f"metadata {key!r:.60}: value type {vtype} is unknown, expected 0..12",
        offset=offset,
    )


def _alignment(cur: _Cursor, vtype: int, offset: int) -> int:
    if vtype != _UINT32:
        raise _Stop(
            Issue(
                "gguf.alignment",
                Severity.ERROR,
                f"general.alignment has type {_TYPE_NAMES[vtype]}, expected UINT32",
                offset=offset,
            )
        )
    value: int = _U32.unpack_from(cur.data, offset)[0]
    if value == 0 or value & (value - 1):
        raise _Stop(
            Issue(
                "gguf.alignment",
                Severity.ERROR,
                f"general.alignment is {value}, expected a power of two",
                offset=offset,
            )
        )
    return value


def _skip_array(cur: _Cursor, ctx: ReadContext, key: str, depth: int) -> None:
    if depth > ctx.limits.max_gguf_array_depth:
        raise LimitError(
            f"metadata {key!r:.60}: arrays nested deeper than {ctx.limits.max_gguf_array_depth} "
            "(limit max_gguf_array_depth)",
            offset=cur.pos,
        )
    type_at = cur.pos
    etype = cur.u32()
    length = cur.u64()
    what = f"array {key!r:.60} element count"
    if etype in VALUE_SIZES:
        cur.skip(length, VALUE_SIZES[etype], what, _COUNT)
    elif etype == _STRING:
        cur.need(length, 8, what, _COUNT)
        cur.pos = _skip_strings(cur, ctx, key, length)
    elif etype == _ARRAY:
        cur.need(length, _MIN_ARRAY, what, _COUNT)
        for index in range(length):
            if index & 0xFFF == 0xFFF:
                ctx.check_time()
            _skip_array(cur, ctx, key, depth + 1)
    else:
        raise _Stop(_value_type_issue(key, etype, type_at))


def _skip_strings(cur: _Cursor, ctx: ReadContext, key: str, length: int) -> int:
    """Skip ``length`` strings (vocabularies: 100k+ entries) without decoding; returns the new position.

    The hot loop only reads each length and moves on; a string that overruns the file stops it,
    and the cursor then reports that string's length against what remained.
    """
    data, size, pos = cur.data, cur.size, cur.pos
    unpack = _U64.unpack_from
    done = 0
    while done < length:
        ctx.check_time()
        chunk = min(length - done, 1 << 16)
        for _ in range(chunk):
            if pos > size - 8:
                cur.pos = pos
                cur.need(1, 8, f"array {key!r:.60} string length field", _TRUNCATED)
            start = pos + 8
            pos = start + unpack(data, pos)[0]
            if pos > size:
                cur.pos = start
                cur.need(pos - start, 1, f"array {key!r:.60} string length")
        done += chunk
    return pos


def _tensor_infos(cur: _Cursor, ctx: ReadContext, n_tensors: int, alignment: int) -> Iterator[Issue]:
    names: set[str] = set()
    spans: list[tuple[int, int, str]] = []
    for index in range(n_tensors):
        if index % 1024 == 0:
            ctx.check_time()
        info_at = cur.pos
        name = _text(cur.string("tensor name"), "tensor name", info_at + 8)
        label = f"tensor {name!r:.80}"
        if name in names:
            yield Issue("gguf.duplicate-tensor", Severity.ERROR, f"{label} appears twice", offset=info_at)
        names.add(name)
        n_dims = cur.u32()
        if not 1 <= n_dims <= _MAX_DIMS:
            raise _Stop(
                Issue(
                    "gguf.tensor-dims",
                    Severity.ERROR,
                    f"{label}: n_dims {n_dims}, expected 1..{_MAX_DIMS}",
                    offset=cur.pos - 4,
                )
            )
        dims = [cur.u64() for _ in range(n_dims)]
        ggml_type = cur.u32()
        offset = cur.u64()
        known = GGML_TYPES.get(ggml_type)
        if known is None:
            yield Issue(
                "gguf.tensor-type",
                Severity.ERROR,
                f"{label}: ggml type {ggml_type} is unknown",
                offset=info_at,
            )
            continue
        type_name, block, type_size = known
        elements = 1
        for dim in dims:
            elements *= dim
        if elements >= 1 << 63:
            yield Issue(
                "gguf.tensor-size",
                Severity.ERROR,
                f"{label}: dims {dims} hold {elements} elements, more than INT64_MAX",
                offset=info_at,
            )
            continue
        if dims[0] % block:
            yield Issue(
                "gguf.tensor-size",
                Severity.ERROR,
                f"{label}: first dimension {dims[0]} is not a multiple of the {type_name} block size {block}",
                offset=info_at,
            )
            continue
        if offset % alignment:
            yield Issue(
                "gguf.tensor-alignment",
                Severity.ERROR,
                f"{label}: data offset {offset} is not a multiple of the alignment {alignment}",
                offset=info_at,
            )
        spans.append((offset, offset + elements // block * type_size, name))
    data_start = -(-cur.pos // alignment) * alignment
    if spans or n_tensors == 0:  # tensors whose data cannot be placed were reported above
        yield from _check_data(spans, data_start, cur.size, alignment)


def _check_data(
    spans: list[tuple[int, int, str]], data_start: int, size: int, alignment: int
) -> Iterator[Issue]:
    if data_start > size:  # the file ends before the padding: no data region (nothing after the header)
        if not spans:  # a file that declares no tensors: nothing to place
            return
        yield Issue(
            "gguf.tensor-out-of-bounds",
            Severity.ERROR,
            f"tensor data would start at {data_start}, past the end of the {size}-byte file",
            offset=size,
        )
        return
    data_size = size - data_start
    spans.sort()
    covered = 0
    last = ""
    for begin, end, name in spans:
        label = f"tensor {name!r:.80}"
        if end > data_size:
            yield Issue(
                "gguf.tensor-out-of-bounds",
                Severity.ERROR,
                f"{label}: data [{begin}, {end}) ends past the data region of {data_size} bytes",
                offset=data_start + begin,
            )
        if begin < covered:
            yield Issue(
                "gguf.tensor-overlap",
                Severity.MALICIOUS,
                f"{label}: data [{begin}, {end}) overlaps tensor {last!r:.80} (covered up to {covered}); "
                "tensors must not alias",
                offset=data_start + begin,
                evidence=f"{name}@[{begin},{end}) overlaps {last}",
            )
        elif begin - covered >= alignment:
            yield Issue(
                "gguf.tensor-gap",
                Severity.ERROR,
                f"{label}: {begin - covered} unreferenced bytes before it (more than alignment padding)",
                offset=data_start + covered,
            )
        if end > covered:
            covered = end
            last = name
    if data_size - covered >= alignment:
        # a file that declares no tensors: every byte after the header's padding is unreferenced
        where = "the last tensor" if spans else "the header, and no tensor data references them"
        yield Issue(
            "gguf.trailing",
            Severity.ERROR,
            f"{data_size - covered} bytes after {where} (more than alignment padding of {alignment})",
            offset=data_start + covered,
        )


#: The instance the registry loads (``airlock._formats.registry.READERS``).
READER: Final = GGUFReader()
