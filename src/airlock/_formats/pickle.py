"""Raw pickle streams (protocols 0-5, back to back) and the PyTorch legacy format.

Sniffing is by what the unpickler accepts, not by what picklers usually write: content is a
pickle when ``pickle.load`` would reach STOP or import something before failing, whatever its
first opcode (``looks_like_pickle``). The torch legacy format is a pickle stream whose first pickle is
torch's magic number; it holds five pickles (magic, protocol, sys info, main object, storage
keys) followed by raw storage bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from airlock._formats.base import Fact, PickleStream, ReadContext
from airlock._formats.pickle_ops import OPCODE_TABLE, Truncated, decode_op, file_reading
from airlock.errors import FormatError

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["LEGACY_MAGIC", "PickleReader", "TorchLegacyReader", "is_legacy_magic", "looks_like_pickle"]

#: ``pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)``: torch's legacy magic number.
LEGACY_MAGIC: Final = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
#: the magic number's LONG1 opcode and STOP, as every protocol from 2 on writes them
_LEGACY_MAGIC_BODY: Final = LEGACY_MAGIC[2:]


def is_legacy_magic(head: bytes) -> bool:
    """True when ``head`` starts with torch's legacy magic number pickled with protocol 2 to 5
    (``torch.save(..., pickle_protocol=N, _use_new_zipfile_serialization=False)``; protocols 4
    and 5 put it in a FRAME)."""
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        return False
    body = head[2:]
    if head[1] >= 4 and body[:1] == b"\x95":
        body = body[9:]
    return body.startswith(_LEGACY_MAGIC_BODY)


_HIGHEST_PROTOCOL: Final = 5
_GLOBAL_OPS: Final = frozenset({0x63, 0x69})  # GLOBAL INST: import the module named on the line
_EXT_OPS: Final = frozenset({0x82, 0x83, 0x84})  # EXT1/2/4: a global from the copyreg registry
_GET_OPS: Final = frozenset({0x67, 0x68, 0x6A})
_PUT_OPS: Final = frozenset({0x70, 0x71, 0x72})
_STR_OPS: Final = frozenset({0x53, 0x54, 0x55, 0x56, 0x58, 0x8C, 0x8D})  # push a str (py2 str too)


def looks_like_pickle(head: bytes, size: int | None = None) -> bool:
    """True when ``pickle.load`` would do something with content starting with ``head``.

    Not a magic number: the unpickler's own rules (``pickle_ops.OPCODE_TABLE``: arguments, stack,
    MARKs, memo) are applied to ``head`` from its first byte, in both ways CPython reads a pickle
    (``pickle.loads`` and a file reader without ``peek``, which differ around FRAME). The content
    is a pickle when the unpickler would reach STOP, or import something (GLOBAL/INST naming a
    module, STACK_GLOBAL on two strings) before it fails; or when ``head`` ends
    before the unpickler fails while more of the file follows (``size`` unknown: assumed). Content
    that fails before importing anything (text that happens to start with an opcode letter) does
    nothing under any unpickler and is not a pickle.
    """
    total = len(head) if size is None else size
    more = size is None or size > len(head)
    view = memoryview(head)
    if _probe(view, total, more):
        return True
    reading = file_reading(view, 0, len(head))
    return reading is not None and _probe(memoryview(reading.data), total, more)


def _probe(view: memoryview, total: int, more: bool) -> bool:
    stack: list[bool] = []  # one entry per item: is it a str (STACK_GLOBAL's operands must be)
    seen_proto = False
    marks: list[int] = []  # stack heights at each MARK
    memo: dict[int, bool] = {}
    pos = 0
    try:
        while True:
            code, arg, pos_next = decode_op(view, pos)
            entry = OPCODE_TABLE[code]
            fence = marks[-1] if marks else 0
            if code == 0x2E:  # STOP
                return len(stack) > fence
            if code in _GLOBAL_OPS:
                assert isinstance(arg, tuple)
                # find_class imports the module: an effect, whatever follows. A module name that
                # is not dotted identifiers cannot be imported, and the unpickler fails there.
                return _importable(arg[0])
            if code in _EXT_OPS:
                # The copyreg extension registry is empty unless the loading program fills it, and
                # then the unpickler imports what it names. After a PROTO header (what every pickler
                # writes before protocol-2 opcodes) that is a pickle whose import is unknowable; with
                # no header it is noise such as raw tensor bytes starting with 0x82-0x84.
                return seen_proto
            if code == 0x93:  # STACK_GLOBAL
                return len(stack) - fence >= 2 and stack[-1] and stack[-2]
            if code == 0x28:  # MARK
                marks.append(len(stack))
            elif code == 0x30:  # POP: on an empty frame CPython pops the MARK instead
                if len(stack) > fence:
                    stack.pop()
                elif marks:
                    marks.pop()
                else:
                    return False
            elif code == 0x80:  # PROTO
                assert isinstance(arg, int)
                if arg > _HIGHEST_PROTOCOL:
                    return False
                seen_proto = True
            elif code in _GET_OPS:
                if arg not in memo:
                    return False
                stack.append(memo[arg])  # type: ignore[index]
            elif code in _PUT_OPS or code == 0x94:  # PUT / MEMOIZE: need an item to store
                if len(stack) <= fence or (isinstance(arg, int) and arg < 0):
                    return False
                memo[len(memo) if code == 0x94 else arg] = stack[-1]  # type: ignore[index]
            elif code == 0x32:  # DUP
                if len(stack) <= fence:
                    return False
                stack.append(stack[-1])
            else:
                _arg, below, takes_mark, above, pushed = entry
                if takes_mark:
                    if not marks or len(stack) - fence < above:
                        return False
                    del stack[marks.pop() :]
                    fence = marks[-1] if marks else 0
                if len(stack) - fence < below:
                    return False
                if below:
                    del stack[-below:]
                stack.extend([code in _STR_OPS] * pushed)
            pos = pos_next
    except Truncated as exc:
        # The head ends first: a pickle if the file goes on and the argument can still be valid
        # (fits in the file; a text line so far made of what that opcode accepts).
        if not more:
            return False
        if exc.need_end is not None:
            return exc.need_end <= total
        start = pos if exc.offset is None else exc.offset
        return _plausible_line(view[pos], bytes(view[start:]))
    except FormatError:
        return False


# patterns, compiled on first use (re caches them): most scans never need them
#: a start of what PyLong_FromString / strtol accept (whitespace, sign, 0x 0o 0b and strtol's
#: octal, underscores), LONG's final L; then the first NUL, which ends the C string, and anything
_NUL_TAIL: Final = rb"(?:\x00.*)?"
_DIGITS: Final = (
    rb"[ \t\v\f\r]*[+-]?(?:(?:0(?:[xX][0-9a-fA-F_]*|[oO][0-7_]*|[bB][01_]*|[0-9_]*)|[1-9][0-9_]*)"
    rb"[ \t\v\f\r]*L?)?" + _NUL_TAIL
)
_FLOAT: Final = rb"[-+0-9.eEinfatyINFATY]*" + _NUL_TAIL
_DOTTED: Final = rb"[A-Za-z0-9_.\x80-\xff]*"


def _plausible_line(code: int, partial: bytes) -> bool:
    """Could an unterminated text argument that starts with ``partial`` still be valid?"""
    if code in (0x49, 0x4C, 0x67, 0x70):  # INT LONG GET PUT
        return re.fullmatch(_DIGITS, partial, re.DOTALL) is not None
    if code == 0x46:  # FLOAT
        return re.fullmatch(_FLOAT, partial, re.DOTALL) is not None
    if code in _GLOBAL_OPS:
        return re.fullmatch(_DOTTED, partial) is not None
    if code == 0x53:  # STRING: a quoted literal
        return partial[:1] in (b"'", b'"')
    if code == 0x50:  # PERSID: an ASCII id
        return partial.isascii()
    return True  # UNICODE: raw-unicode-escape takes any bytes


def _importable(module: str) -> bool:
    return bool(module) and all(part.isidentifier() for part in module.split("."))


class PickleReader:
    name = "pickle"

    def sniff(self, head: bytes, size: int) -> bool:
        return looks_like_pickle(head, size)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        yield PickleStream(data, 0, "pickle")


class TorchLegacyReader:
    name = "torch-legacy"

    def sniff(self, head: bytes, size: int) -> bool:
        return is_legacy_magic(head)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        yield PickleStream(data, 0, "torch legacy", max_pickles=5, trailing_ok=True)


#: The instances the registry loads (``airlock._formats.registry.READERS``).
LEGACY_READER: Final = TorchLegacyReader()
READER: Final = PickleReader()
