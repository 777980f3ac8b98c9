"""A bounded reader for the protobuf wire format (no schema, no protobuf package).

ONNX models and TensorFlow SavedModels are protobuf messages. The scanner must not import
``onnx``, ``protobuf`` or ``tensorflow`` (their parsers are big, and the trusted process only
parses untrusted bytes with airlock's own readers), so this module reads the wire format itself:

* a message is a run of fields ``tag = number << 3 | wire type`` followed by a value;
* varints are at most 10 bytes and must fit in 64 bits;
* a length-delimited value's length is checked against the end of its enclosing message before
  it is used, so a lying length is a :class:`~airlock.errors.FormatError`, never a big slice;
* groups (wire types 3 and 4, deprecated since proto2, used by neither ONNX nor TensorFlow) and
  the undefined wire types 6 and 7 are errors; field number 0 is an error;
* callers walk nested messages themselves and call :func:`enter` for every level, which raises
  :class:`~airlock.errors.LimitError` past ``Limits.max_protobuf_depth``.

Nothing is copied: a length-delimited field is reported as a ``(start, end)`` window into the
caller's buffer, and only the strings a caller asks for are decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from airlock.errors import FormatError, LimitError
from airlock.limits import Limits

__all__ = [
    "I32",
    "I64",
    "LEN",
    "VARINT",
    "Field",
    "enter",
    "iter_fields",
    "read_varint",
    "text",
]

VARINT: Final = 0
I64: Final = 1
LEN: Final = 2
I32: Final = 5

_MAX_VARINT_BYTES: Final = 10
_MAX_FIELD_NUMBER: Final = (1 << 29) - 1
_WIRE_NAMES: Final = {0: "varint", 1: "64-bit", 2: "length-delimited", 5: "32-bit"}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message. Offsets are absolute positions in the caller's buffer.

    ``value`` is the integer for varint and fixed-width fields; for length-delimited fields the
    payload is ``data[start:end]`` and ``value`` is its length.
    """

    number: int
    wire: int
    value: int
    #: offset of the tag
    offset: int
    #: payload window (length-delimited fields); for other wire types both are the value's end
    start: int
    end: int

    def wire_name(self) -> str:
        return _WIRE_NAMES.get(self.wire, str(self.wire))


def read_varint(data: memoryview | bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos`` (not reading at or past ``end``); return ``(value, next pos)``."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise FormatError(
                f"varint at offset {start} runs past the end of its message (ends at {end})", offset=start
            )
        if pos - start >= _MAX_VARINT_BYTES:
            raise FormatError(
                f"varint at offset {start} is longer than {_MAX_VARINT_BYTES} bytes", offset=start
            )
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    if result >> 64:
        raise FormatError(f"varint at offset {start} does not fit in 64 bits", offset=start)
    return result, pos


def iter_fields(data: memoryview | bytes, start: int, end: int) -> Iterator[Field]:
    """Yield the fields of the message in ``data[start:end]``, checking every length first."""
    if not 0 <= start <= end <= len(data):
        raise FormatError(
            f"message window {start}..{end} is outside the {len(data)}-byte buffer", offset=start
        )
    pos = start
    while pos < end:
        offset = pos
        tag, pos = read_varint(data, pos, end)
        number = tag >> 3
        wire = tag & 7
        if number == 0 or number > _MAX_FIELD_NUMBER:
            raise FormatError(
                f"field number {number} at offset {offset} is invalid (expected 1..{_MAX_FIELD_NUMBER})",
                offset=offset,
            )
        if wire == VARINT:
            value, pos = read_varint(data, pos, end)
            yield Field(number, wire, value, offset, pos, pos)
        elif wire == LEN:
            length, pos = read_varint(data, pos, end)
            if length > end - pos:
                raise FormatError(
                    f"field {number} at offset {offset} declares {length} bytes but only {end - pos} "
                    f"remain in its message",
                    offset=offset,
                )
            yield Field(number, wire, length, offset, pos, pos + length)
            pos += length
        elif wire in (I64, I32):
            width = 8 if wire == I64 else 4
            if width > end - pos:
                raise FormatError(
                    f"{width * 8}-bit field {number} at offset {offset} runs past the end of its message",
                    offset=offset,
                )
            value = int.from_bytes(data[pos : pos + width], "little")
            pos += width
            yield Field(number, wire, value, offset, pos, pos)
        else:
            raise FormatError(
                f"field {number} at offset {offset} has wire type {wire} (expected 0, 1, 2 or 5; "
                f"groups are not used by ONNX or TensorFlow)",
                offset=offset,
            )


def text(data: memoryview | bytes, field: Field, what: str) -> str:
    """The UTF-8 string in a length-delimited ``field``; FormatError if it is not one."""
    if field.wire != LEN:
        raise FormatError(
            f"{what} at offset {field.offset} has wire type {field.wire_name()} (expected length-delimited)",
            offset=field.offset,
        )
    try:
        return bytes(data[field.start : field.end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"{what} at offset {field.offset} is not valid UTF-8: {exc.reason}", offset=field.offset
        ) from exc


def enter(depth: int, limits: Limits, offset: int) -> int:
    """The depth of a nested message one level below ``depth``; LimitError past the limit."""
    depth += 1
    if depth > limits.max_protobuf_depth:
        raise LimitError(
            f"messages nest deeper than {limits.max_protobuf_depth} levels at offset {offset} "
            f"(limit max_protobuf_depth)",
            offset=offset,
        )
    return depth
