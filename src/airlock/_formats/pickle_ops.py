"""Decode pickle opcodes (protocols 0-5) from bytes, one at a time, without executing anything.

Every length read from the stream is checked against the bytes that remain before anything is
copied; text arguments (protocol 0) are bounded in length. Large string and bytes arguments are
returned as zero-copy ``memoryview`` slices.
"""

from __future__ import annotations

import bisect
import codecs
import struct

from airlock.errors import FormatError, LimitError

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "ARG_NONE",
    "MAX_TEXT_LINE",
    "NO_ARG_OPCODES",
    "OPCODE_NAMES",
    "FileReading",
    "Truncated",
    "decode_op",
    "file_reading",
]

#: Longest text-line argument (protocol 0 ints, names, strings) we accept.
MAX_TEXT_LINE: Final = 64 * 1024 * 1024
#: String arguments longer than this are returned undecoded (as a memoryview).
MAX_DECODED_TEXT: Final = 1024 * 1024
#: protocol-0 integer text longer than this is not converted (CPython refuses > 4,300 decimal digits)
_MAX_INT_TEXT: Final = 100_000

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

#: LONG4 integers longer than this many bytes are not decoded (a :class:`HugeInt` stands for them).
MAX_DECODED_LONG: Final = 100_000


class HugeInt:
    """A LONG4 integer too long to decode here: every unpickler decodes it (it is valid), so the
    reading goes on past it; its value is never needed to judge what a pickle imports or calls,
    and no tensor size or offset is this long (a loader that needs an ``int`` refuses it)."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes

    def __repr__(self) -> str:
        return f"<{self.nbytes}-byte integer>"


Arg = None | int | float | str | bytes | memoryview | tuple[str, str] | HugeInt


class Truncated(FormatError):
    """The data ended before an opcode or its argument did. ``need_end`` is the position the
    argument would end at (None when unknown: a text line with no newline yet)."""

    def __init__(self, message: str, *, offset: int | None, need_end: int | None) -> None:
        super().__init__(message, offset=offset)
        self.need_end = need_end


def _need(data: memoryview, pos: int, n: int, what: str) -> None:
    if n < 0:
        raise FormatError(f"{what}: negative length {n}", offset=pos)
    if pos + n > len(data):
        raise Truncated(
            f"{what}: needs {n} bytes but only {len(data) - pos} remain (truncated or lying length)",
            offset=pos,
            need_end=pos + n,
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
                raise LimitError(f"{what}: text argument longer than {MAX_TEXT_LINE} bytes", offset=pos)
            raise Truncated(f"{what}: no newline before end of data", offset=pos, need_end=None)
        chunk *= 4


def _text(raw: memoryview, pos: int, encoding: str) -> str | memoryview:
    if len(raw) > MAX_DECODED_TEXT:
        return raw
    try:
        return str(codecs.decode(bytes(raw), encoding, "surrogatepass" if encoding == "utf-8" else "strict"))
    except UnicodeDecodeError as exc:
        raise FormatError(f"string argument is not valid {encoding}: {exc.reason}", offset=pos) from exc


def _c_int(text: bytes, pos: int, what: str, base: int, *, strtol: bool = False) -> int:
    """A protocol-0 integer argument exactly as CPython's ``_pickle`` reads it (``PyLong_FromString``:
    whitespace, underscores, ``0x``/``0o``/``0b`` prefixes for base 0; ``strtol``'s leading-zero
    octal for INT). A stricter reading stops where the real unpickler reads on, hiding what follows.
    """
    if len(text) > _MAX_INT_TEXT:
        raise LimitError(f"{what}: integer text longer than {_MAX_INT_TEXT} bytes", offset=pos)
    if strtol:  # INT only; LONG, GET and PUT go straight to PyLong_FromString
        # what C strtol reads as octal and int(text, 0) refuses ("010" is 8 to INT)
        body = text.lstrip(b" \t\n\v\f\r")
        sign = body[:1] if body[:1] in (b"+", b"-") else b""
        digits = body[len(sign) :]
        if len(digits) > 1 and digits[:1] == b"0" and not digits.strip(b"01234567"):
            value = int(digits, 8)
            return -value if sign == b"-" else value
    try:
        return int(text, base)
    except ValueError as exc:
        raise FormatError(f"{what}: not an integer: {text[:40]!r}", offset=pos) from exc


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
        raise Truncated("pickle ends without STOP", offset=pos, need_end=pos + 1)
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
        if n > MAX_DECODED_LONG:
            # valid to every unpickler: stopping here would hide what follows (a lenient storage
            # reading treats a stop as the end of a pickle), so the reading goes on
            return code, HugeInt(n), p + 4 + n
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
    # CPython reads numbers from the line as a C string (strtol, PyLong_FromString,
    # PyOS_string_to_double): the first NUL ends the number, whatever follows it on the line.
    if code == 0x49:  # INT: C strtol(base 0) first, then int(text, 0); "00" "01" "+0" ... are bools
        number, nul, _rest = text.partition(b"\0")
        # strtol reads no digit from an empty string and stops at its NUL: accepted, 0
        value = 0 if nul and not number else _c_int(number, pos, name, 0, strtol=True)
        return code, (bool(value) if len(text) == 2 and value in (0, 1) else value), nxt
    if code == 0x4C:  # LONG: the line's last character dropped when it is L, then int(text, 0)
        number = (text[:-1] if text.endswith(b"L") else text).partition(b"\0")[0]
        return code, _c_int(number, pos, name, 0), nxt
    if code in (0x67, 0x70):  # GET PUT: int(text, 10)
        return code, _c_int(text.partition(b"\0")[0], pos, name, 10), nxt
    if code == 0x46:  # FLOAT
        # _pickle: PyOS_string_to_double, which must end at the newline or a NUL; the pure-Python
        # unpickler (joblib's): float() of the line, which also takes whitespace and underscores
        # but no NUL. The reading goes on where either does.
        number, nul, _rest = text.partition(b"\0")
        try:
            if nul and (number.strip(b" \t\v\f\r") != number or b"_" in number):
                raise ValueError  # a NUL: only _pickle reads on, and not past these
            return code, float(number.decode("ascii")), nxt
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


# -- the unpickler's opcode table and how a file reader consumes it ---------------------------------

#: ``pickletools.opcodes`` as data (tests/analysis/test_pickle_sniff.py checks it against the
#: running interpreter): opcode -> (argument, items below the MARK or popped, takes a MARK, items
#: above the MARK, items pushed). Argument: n > 0 fixed bytes; 0 none; -1 one text line; -2 two
#: lines; -11/-14/-18 a 1/4/8-byte length, then that many bytes.
OPCODE_TABLE: Final[dict[int, tuple[int, int, bool, int, int]]] = {
    0x49: (-1, 0, False, 0, 1),  # INT
    0x4A: (4, 0, False, 0, 1),  # BININT
    0x4B: (1, 0, False, 0, 1),  # BININT1
    0x4D: (2, 0, False, 0, 1),  # BININT2
    0x4C: (-1, 0, False, 0, 1),  # LONG
    0x8A: (-11, 0, False, 0, 1),  # LONG1
    0x8B: (-14, 0, False, 0, 1),  # LONG4
    0x53: (-1, 0, False, 0, 1),  # STRING
    0x54: (-14, 0, False, 0, 1),  # BINSTRING
    0x55: (-11, 0, False, 0, 1),  # SHORT_BINSTRING
    0x42: (-14, 0, False, 0, 1),  # BINBYTES
    0x43: (-11, 0, False, 0, 1),  # SHORT_BINBYTES
    0x8E: (-18, 0, False, 0, 1),  # BINBYTES8
    0x96: (-18, 0, False, 0, 1),  # BYTEARRAY8
    0x97: (0, 0, False, 0, 1),  # NEXT_BUFFER
    0x98: (0, 1, False, 0, 1),  # READONLY_BUFFER
    0x4E: (0, 0, False, 0, 1),  # NONE
    0x88: (0, 0, False, 0, 1),  # NEWTRUE
    0x89: (0, 0, False, 0, 1),  # NEWFALSE
    0x56: (-1, 0, False, 0, 1),  # UNICODE
    0x8C: (-11, 0, False, 0, 1),  # SHORT_BINUNICODE
    0x58: (-14, 0, False, 0, 1),  # BINUNICODE
    0x8D: (-18, 0, False, 0, 1),  # BINUNICODE8
    0x46: (-1, 0, False, 0, 1),  # FLOAT
    0x47: (8, 0, False, 0, 1),  # BINFLOAT
    0x5D: (0, 0, False, 0, 1),  # EMPTY_LIST
    0x61: (0, 2, False, 0, 1),  # APPEND
    0x65: (0, 1, True, 0, 1),  # APPENDS
    0x6C: (0, 0, True, 0, 1),  # LIST
    0x29: (0, 0, False, 0, 1),  # EMPTY_TUPLE
    0x74: (0, 0, True, 0, 1),  # TUPLE
    0x85: (0, 1, False, 0, 1),  # TUPLE1
    0x86: (0, 2, False, 0, 1),  # TUPLE2
    0x87: (0, 3, False, 0, 1),  # TUPLE3
    0x7D: (0, 0, False, 0, 1),  # EMPTY_DICT
    0x64: (0, 0, True, 0, 1),  # DICT
    0x73: (0, 3, False, 0, 1),  # SETITEM
    0x75: (0, 1, True, 0, 1),  # SETITEMS
    0x8F: (0, 0, False, 0, 1),  # EMPTY_SET
    0x90: (0, 1, True, 0, 1),  # ADDITEMS
    0x91: (0, 0, True, 0, 1),  # FROZENSET
    0x30: (0, 1, False, 0, 0),  # POP
    0x32: (0, 1, False, 0, 2),  # DUP
    0x28: (0, 0, False, 0, 1),  # MARK
    0x31: (0, 0, True, 0, 0),  # POP_MARK
    0x67: (-1, 0, False, 0, 1),  # GET
    0x68: (1, 0, False, 0, 1),  # BINGET
    0x6A: (4, 0, False, 0, 1),  # LONG_BINGET
    0x70: (-1, 0, False, 0, 0),  # PUT
    0x71: (1, 0, False, 0, 0),  # BINPUT
    0x72: (4, 0, False, 0, 0),  # LONG_BINPUT
    0x94: (0, 1, False, 0, 1),  # MEMOIZE
    0x82: (1, 0, False, 0, 1),  # EXT1
    0x83: (2, 0, False, 0, 1),  # EXT2
    0x84: (4, 0, False, 0, 1),  # EXT4
    0x63: (-2, 0, False, 0, 1),  # GLOBAL
    0x93: (0, 2, False, 0, 1),  # STACK_GLOBAL
    0x52: (0, 2, False, 0, 1),  # REDUCE
    0x62: (0, 2, False, 0, 1),  # BUILD
    0x69: (-2, 0, True, 0, 1),  # INST
    0x6F: (0, 0, True, 1, 1),  # OBJ
    0x81: (0, 2, False, 0, 1),  # NEWOBJ
    0x92: (0, 3, False, 0, 1),  # NEWOBJ_EX
    0x80: (1, 0, False, 0, 0),  # PROTO
    0x2E: (0, 1, False, 0, 0),  # STOP
    0x95: (8, 0, False, 0, 0),  # FRAME
    0x50: (-1, 0, False, 0, 1),  # PERSID
    0x51: (0, 1, False, 0, 1),  # BINPERSID
}

_FRAME: Final = 0x95
#: BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8: CPython reads their bodies in order, across
#: the end of the buffer (``_Unpickler_ReadInto``); every other argument is read as one piece.
_READ_INTO: Final = frozenset({0x42, 0x43, 0x8E, 0x96})
_STOP: Final = 0x2E


class FileReading:
    """A pickle as CPython's C unpickler reads it from a file object without ``peek``.

    ``pickle.loads`` and ``pickle.load(open(path, "rb"))`` read the bytes in order. An unpickler
    reading a file object without ``peek`` (``io.BytesIO``, ``open(..., buffering=0)``: what
    ``torch.load`` hands the unpickler for a zip checkpoint's ``data.pkl``) buffers exactly the
    bytes of a FRAME; a read that runs past the end of that buffer drops the rest of it and reads
    on from the file after the frame. So a text line, a length or a string that crosses the end of
    a FRAME is read from other bytes than ``pickle.loads`` reads. ``data`` is what that reader
    consumes, in order; ``dropped`` the (start, end) ranges of the original it skips.
    """

    __slots__ = ("_starts", "crossings", "cut", "data", "dropped", "resume", "segments")

    def __init__(self, data: bytes, segments: list[tuple[int, int]], dropped: list[tuple[int, int]]) -> None:
        self.data = data
        #: (offset in ``data``, offset in the original) where each contiguous piece starts
        self.segments = segments
        self._starts = [s for s, _ in segments]
        self.dropped = dropped
        #: the reading stopped at ``max_bytes`` before STOP or an error: the rest is not in ``data``
        self.cut = False
        #: reads that crossed the end of a FRAME's buffer (see :func:`file_reading`'s ``across``)
        self.crossings = 0
        #: where the file stands after STOP (the end of a frame read exactly, when STOP came inside
        #: it): the next ``load`` of the same file starts there. None: no STOP in this reading.
        self.resume: int | None = None

    def original_offset(self, offset: int | None) -> int | None:
        """Where ``offset`` in :attr:`data` lies in the original bytes."""
        if offset is None or not self.segments:
            return offset
        index = max(0, bisect.bisect_right(self._starts, offset) - 1)
        here, there = self.segments[index]
        return there + offset - here


def file_reading(
    data: memoryview, start: int, max_bytes: int, across: tuple[bool, ...] = ()
) -> FileReading | None:
    """The bytes a ``peek``-less file reader consumes for the pickle at ``start`` (see
    :class:`FileReading`), up to STOP, the first undecodable opcode, or ``max_bytes`` consumed.
    None when it consumes the same bytes as ``pickle.loads`` (no read crosses a FRAME's end).

    ``across``: a reader *with* ``peek`` (``pickle.load(open(path, "rb"))``, ``numpy.load``, torch's
    legacy format) holds a FRAME in the window it peeked when the frame fits there, and reads across
    its end in order like ``pickle.loads``; a frame of 8 KiB or more, or one past the end of the
    file object's buffer (its size is the file system's block size), it ``read()``s exactly, and
    drops the rest at a crossing like a reader without ``peek``. So every crossing can go either
    way: ``across[i]`` True reads the i-th crossing in order, False (and every crossing past the
    tuple) drops. :attr:`FileReading.crossings` counts the crossings of this reading."""
    size = len(data)
    pos = start  # next byte the unpickler reads
    buf_end = start  # end of the buffered bytes; reads at buf_end come straight from the file
    kept: list[tuple[int, int]] = []  # original (start, end) ranges consumed, in order
    dropped: list[tuple[int, int]] = []
    piece = start
    skipped = 0
    cut = False
    crossings = 0
    resume: int | None = None

    def in_order() -> bool:
        # this read crosses the end of the buffered bytes: read on in order, or drop the rest
        nonlocal crossings
        crossings += 1
        return crossings <= len(across) and across[crossings - 1]

    def drop() -> None:
        nonlocal piece, skipped
        kept.append((piece, pos))
        dropped.append((pos, buf_end))
        skipped += buf_end - pos
        piece = buf_end

    def read(n: int) -> int:
        # Returns where the n bytes read start in the original.
        nonlocal pos, buf_end
        if n < 0:
            raise FormatError("negative length", offset=pos)
        if pos + n <= buf_end:
            at = pos
            pos += n
            return at
        if pos < buf_end:
            if in_order():
                at = pos
                pos = buf_end = pos + n
                if pos > size:
                    raise FormatError("file ends inside an argument", offset=at)
                return at
            drop()
        at = buf_end
        pos = buf_end = at + n
        if pos > size:
            raise FormatError("file ends inside an argument", offset=at)
        return at

    def readline() -> int:
        nonlocal pos, buf_end
        nl = bytes(data[pos:buf_end]).find(b"\n") if pos < buf_end else -1
        if nl >= 0:
            at = pos
            pos += nl + 1
            return at
        if pos < buf_end and in_order():
            found = bytes(data[pos : min(size, pos + MAX_TEXT_LINE)]).find(b"\n")
            if found < 0:
                raise FormatError("file ends inside a text line", offset=pos)
            at = pos
            pos = buf_end = pos + found + 1
            return at
        if pos < buf_end:
            drop()
        at = buf_end
        limit = min(size, at + MAX_TEXT_LINE)
        found = bytes(data[at:limit]).find(b"\n")
        if found < 0:
            raise FormatError("file ends inside a text line", offset=at)
        pos = buf_end = at + found + 1
        return at

    try:
        while True:
            if pos - start - skipped >= max_bytes:
                cut = True
                break
            code = data[read(1)]
            entry = OPCODE_TABLE.get(code)
            if entry is None:
                break
            arg = entry[0]
            if code == _FRAME:
                length = _U8.unpack_from(data, read(8))[0]
                if pos + length > buf_end:  # the C unpickler reads the frame, then rewinds to its start
                    read(length)
                    pos -= length
            elif arg > 0:
                read(arg)
            elif arg == -1:
                readline()
            elif arg == -2:
                readline()
                readline()
            elif arg < -10:
                width = -arg - 10
                at = read(width)
                n = int.from_bytes(
                    data[at : at + width], "little", signed=width == 4 and code in (0x54, 0x8B)
                )
                if code in _READ_INTO:
                    # bytes bodies are read with readinto: the rest of the buffer, then the file
                    if n < 0 or pos + n > size:
                        break
                    pos += n
                    buf_end = max(buf_end, pos)
                else:
                    read(n)
            if code == _STOP:
                resume = max(pos, buf_end)
                break
    except (FormatError, IndexError):
        pass
    if not dropped:
        return None
    kept.append((piece, min(pos, size)))
    segments: list[tuple[int, int]] = []
    out = bytearray()
    for s, e in kept:
        segments.append((len(out), s))
        out += data[s:e]
    reading = FileReading(bytes(out), segments, dropped)
    reading.cut = cut
    reading.crossings = crossings
    reading.resume = resume
    return reading
