"""Decode pickle opcodes (protocols 0-5) from bytes, one at a time, without executing anything.

Every length read from the stream is checked against the bytes that remain before anything is
copied; text arguments (protocol 0) are bounded in length. Large string and bytes arguments are
returned as zero-copy ``memoryview`` slices.
"""

from __future__ import annotations

import codecs
import struct
from typing import Final

from airlock.errors import FormatError

__all__ = ["ARG_NONE", "MAX_TEXT_LINE", "NO_ARG_OPCODES", "OPCODE_NAMES", "decode_op"]

#: Longest text-line argument (protocol 0 ints, names, strings) we accept.
MAX_TEXT_LINE: Final = 64 * 1024 * 1024
#: String arguments longer than this are returned undecoded (as a memoryview).
MAX_DECODED_TEXT: Final = 1024 * 1024

ARG_NONE: Final = None

#: Opcodes that take no argument (the machine decodes them inline).
NO_ARG_OPCODES: Final = frozenset(
    b"(.012NQRabdeltosu}])\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94\x97\x98"
)

OPCODE_NAMES: Final[dict[int, str]] = {
    ord(k): v
    for k, v in {
        "(": "MARK",
        ".": "STOP",
        "0": "POP",
        "1": "POP_MARK",
        "2": "DUP",
        "F": "FLOAT",
        "I": "INT",
        "J": "BININT",
        "K": "BININT1",
        "L": "LONG",
        "M": "BININT2",
        "N": "NONE",
        "P": "PERSID",
        "Q": "BINPERSID",
        "R": "REDUCE",
        "S": "STRING",
        "T": "BINSTRING",
        "U": "SHORT_BINSTRING",
        "V": "UNICODE",
        "X": "BINUNICODE",
        "a": "APPEND",
        "b": "BUILD",
        "c": "GLOBAL",
        "d": "DICT",
        "}": "EMPTY_DICT",
        "e": "APPENDS",
        "g": "GET",
        "h": "BINGET",
        "i": "INST",
        "j": "LONG_BINGET",
        "l": "LIST",
        "]": "EMPTY_LIST",
        "o": "OBJ",
        "p": "PUT",
        "q": "BINPUT",
        "r": "LONG_BINPUT",
        "s": "SETITEM",
        "t": "TUPLE",
        ")": "EMPTY_TUPLE",
        "u": "SETITEMS",
        "G": "BINFLOAT",
        "\x80": "PROTO",
        "\x81": "NEWOBJ",
        "\x82": "EXT1",
        "\x83": "EXT2",
        "\x84": "EXT4",
        "\x85": "TUPLE1",
        "\x86": "TUPLE2",
        "\x87": "TUPLE3",
        "\x88": "NEWTRUE",
        "\x89": "NEWFALSE",
        "\x8a": "LONG1",
        "\x8b": "LONG4",
        "B": "BINBYTES",
        "C": "SHORT_BINBYTES",
        "\x8c": "SHORT_BINUNICODE",
        "\x8d": "BINUNICODE8",
        "\x8e": "BINBYTES8",
        "\x8f": "EMPTY_SET",
        "\x90": "ADDITEMS",
        "\x91": "FROZENSET",
        "\x92": "NEWOBJ_EX",
        "\x93": "STACK_GLOBAL",
        "\x94": "MEMOIZE",
        "\x95": "FRAME",
        "\x96": "BYTEARRAY8",
        "\x97": "NEXT_BUFFER",
        "\x98": "READONLY_BUFFER",
    }.items()
}

_U2: Final = struct.Struct("<H")
_I4: Final = struct.Struct("<i")
_U4: Final = struct.Struct("<I")
_U8: Final = struct.Struct("<Q")
_F8: Final = struct.Struct(">d")

Arg = None | int | float | str | bytes | memoryview | tuple[str, str]


def _need(data: memoryview, pos: int, n: int, what: str) -> None:
    if n < 0:
        raise FormatError(f"{what}: negative length {n}", offset=pos)
    if pos + n > len(data):
        raise FormatError(
            f"{what}: needs {n} bytes but only {len(data) - pos} remain (truncated or lying length)",
            offset=pos,
        )


def _line(data: memoryview, pos: int, what: str) -> tuple[bytes, int]:
    """The text up to the next newline (exclusive) and the position after it."""
    chunk = 256
    limit = min(len(data), pos + MAX_TEXT_LINE)
    while True:
        end = min(limit, pos + chunk)
        piece = bytes(data[pos:end])
        nl = piece.find(b"\n")
        if nl >= 0:
            return piece[:nl], pos + nl + 1
        if end >= limit:
            if limit < len(data):
                raise FormatError(f"{what}: text argument longer than {MAX_TEXT_LINE} bytes", offset=pos)
            raise FormatError(f"{what}: no newline before end of data", offset=pos)
        chunk *= 4


def _text(raw: memoryview, pos: int, encoding: str) -> str | memoryview:
    if len(raw) > MAX_DECODED_TEXT:
        return raw
    try:
        return str(codecs.decode(bytes(raw), encoding, "surrogatepass" if encoding == "utf-8" else "strict"))
    except UnicodeDecodeError as exc:
        raise FormatError(f"string argument is not valid {encoding}: {exc.reason}", offset=pos) from exc


def _decimal(text: bytes, pos: int, what: str) -> int:
    body = text[:-1] if text.endswith(b"L") else text
    if not body or len(body) > 10_000 or not body.lstrip(b"+-").isdigit():
        raise FormatError(f"{what}: not a decimal integer: {text[:40]!r}", offset=pos)
    return int(body)


def _quoted(text: bytes, pos: int) -> bytes:
    """A protocol-0 STRING argument: a quoted Python 2 str literal with escapes."""
    if len(text) >= 2 and text[0] == text[-1] and text[:1] in (b"'", b'"'):
        try:
            return bytes(codecs.escape_decode(text[1:-1])[0])
        except ValueError as exc:
            raise FormatError(f"STRING: bad escape: {exc}", offset=pos) from exc
    raise FormatError("STRING: argument is not a quoted string", offset=pos)


def decode_op(data: memoryview, pos: int) -> tuple[int, Arg, int]:
    """Decode the opcode at ``pos``: returns (opcode byte, argument, position of the next opcode)."""
    if pos >= len(data):
        raise FormatError("pickle ends without STOP", offset=pos)
    code = data[pos]
    p = pos + 1
    if code in NO_ARG_OPCODES:
        return code, None, p
    name = OPCODE_NAMES.get(code)
    if name is None:
        raise FormatError(f"unknown opcode 0x{code:02x}", offset=pos)
    if code in (0x4B, 0x68, 0x71, 0x80, 0x82):  # BININT1 BINGET BINPUT PROTO EXT1: uint1
        _need(data, p, 1, name)
        return code, data[p], p + 1
    if code in (0x4D, 0x83):  # BININT2 EXT2: uint2
        _need(data, p, 2, name)
        return code, _U2.unpack_from(data, p)[0], p + 2
    if code in (0x4A, 0x84):  # BININT EXT4: int4
        _need(data, p, 4, name)
        return code, _I4.unpack_from(data, p)[0], p + 4
    if code in (0x6A, 0x72):  # LONG_BINGET LONG_BINPUT: uint4
        _need(data, p, 4, name)
        return code, _U4.unpack_from(data, p)[0], p + 4
    if code == 0x95:  # FRAME: uint8 frame length, only a read-ahead hint
        _need(data, p, 8, name)
        return code, _U8.unpack_from(data, p)[0], p + 8
    if code == 0x47:  # BINFLOAT
        _need(data, p, 8, name)
        return code, _F8.unpack_from(data, p)[0], p + 8
    if code in (0x55, 0x43, 0x8C):  # SHORT_BINSTRING SHORT_BINBYTES SHORT_BINUNICODE: uint1 length
        _need(data, p, 1, name)
        n = data[p]
        p += 1
    elif code in (0x54, 0x42, 0x58):  # BINSTRING (int4) BINBYTES BINUNICODE (uint4)
        _need(data, p, 4, name)
        n = (_I4 if code == 0x54 else _U4).unpack_from(data, p)[0]
        p += 4
    elif code in (0x8D, 0x8E, 0x96):  # BINUNICODE8 BINBYTES8 BYTEARRAY8: uint8 length
        _need(data, p, 8, name)
        n = _U8.unpack_from(data, p)[0]
        p += 8
    elif code == 0x8A:  # LONG1
        _need(data, p, 1, name)
        n = data[p]
        _need(data, p + 1, n, name)
        return code, int.from_bytes(data[p + 1 : p + 1 + n], "little", signed=True), p + 1 + n
    elif code == 0x8B:  # LONG4
        _need(data, p, 4, name)
        n = _I4.unpack_from(data, p)[0]
        _need(data, p + 4, n, name)
        if n > 100_000:
            raise FormatError(f"LONG4: {n}-byte integer is larger than any model file needs", offset=pos)
        return code, int.from_bytes(data[p + 4 : p + 4 + n], "little", signed=True), p + 4 + n
    else:
        return _decode_text_op(data, pos, code, name)
    _need(data, p, n, name)
    raw = data[p : p + n]
    if code in (0x58, 0x8C, 0x8D):
        return code, _text(raw, p, "utf-8"), p + n
    if code in (0x55, 0x54):  # py2 str: loaded as str by default (ASCII), kept as bytes here
        return code, raw if n > MAX_DECODED_TEXT else bytes(raw), p + n
    return code, raw, p + n


def _decode_text_op(data: memoryview, pos: int, code: int, name: str) -> tuple[int, Arg, int]:
    p = pos + 1
    if code in (0x63, 0x69):  # GLOBAL INST: two lines, module and name
        module, p = _line(data, p, name)
        qualname, p = _line(data, p, name)
        try:
            return code, (module.decode("utf-8"), qualname.decode("utf-8")), p
        except UnicodeDecodeError as exc:
            raise FormatError(f"{name}: module or name is not UTF-8", offset=pos) from exc
    text, nxt = _line(data, p, name)
    if code == 0x49:  # INT, with the protocol-0 spellings of booleans
        if text == b"00":
            return code, False, nxt
        if text == b"01":
            return code, True, nxt
        return code, _decimal(text, pos, name), nxt
    if code == 0x4C:  # LONG
        return code, _decimal(text, pos, name), nxt
    if code in (0x67, 0x70):  # GET PUT
        return code, _decimal(text, pos, name), nxt
    if code == 0x46:  # FLOAT
        try:
            return code, float(text.decode("ascii")), nxt
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormatError(f"FLOAT: not a number: {text[:40]!r}", offset=pos) from exc
    if code == 0x53:  # STRING
        return code, _quoted(text, pos), nxt
    if code == 0x56:  # UNICODE, raw-unicode-escape
        try:
            return code, text.decode("raw-unicode-escape"), nxt
        except UnicodeDecodeError as exc:
            raise FormatError(f"UNICODE: bad escape: {exc.reason}", offset=pos) from exc
    if code == 0x50:  # PERSID
        try:
            return code, text.decode("ascii"), nxt
        except UnicodeDecodeError as exc:
            raise FormatError("PERSID: id is not ASCII", offset=pos) from exc
    raise FormatError(f"unhandled opcode {name}", offset=pos)  # pragma: no cover - table is complete
