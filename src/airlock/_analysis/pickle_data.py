"""A fast first pass for the scanner: is this pickle plain data?

Most large pickles (vocabularies, pickled datasets, caches) hold only literals and containers.
Nothing in them can import or call anything, so the object graph the symbolic machine builds
(a node per value, all held by the memo: ~37x the file for a million small dicts) is not needed
to judge them. This pass follows the unpickler's stack, MARK and memo rules with counts only
(``pickle_ops.OPCODE_TABLE``), checks every argument as the machine does, and gives up (returns
None) at the first opcode that could import or call (GLOBAL, STACK_GLOBAL, INST, OBJ, REDUCE,
NEWOBJ, BUILD, EXT, PERSID, out-of-band buffers): the caller then runs the full machine.

The result has what the findings need from a data pickle: where it ends, whether and where it
broke off, FRAME anomalies and the first opcode that crosses a FRAME's end. The limits on
opcodes, memo and stack are the machine's.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from airlock._analysis.pickle_graph import PickleResult
from airlock._formats.pickle_ops import OPCODE_TABLE, decode_op
from airlock.errors import FormatError, LimitError
from airlock.limits import Limits

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["scan_data_pickle"]

_NO_FRAME: Final = 1 << 62
_CHECK_EVERY: Final = 65536
#: Opcodes that import or call something, or need more than counts to follow: the full machine.
_NOT_DATA: Final = frozenset(b"ci\x93o\x81\x92Rb\x82\x83\x84PQ\x97")
#: Opcodes that push one literal and have no constraint beyond decoding their argument.
_LITERALS: Final = frozenset(b"NIJKLMFGSTUVXBC\x88\x89\x8a\x8b\x8c\x8d\x8e\x96]})\x8f")
_PUTS: Final = frozenset(b"pqr")
_GETS: Final = frozenset(b"ghj")
_UTF8: Final = codecs.utf_8_decode


class _Memo:
    """Which memo keys are set: a bitmap for the dense keys picklers write, a set for the rest."""

    __slots__ = ("bits", "count", "extra")

    def __init__(self) -> None:
        self.bits = bytearray(1024)
        self.extra: set[int] = set()
        self.count = 0

    def add(self, key: int) -> None:
        bits = self.bits
        if key < len(bits):
            if not bits[key]:
                bits[key] = 1
                self.count += 1
        elif key < 2 * len(bits) + 1024 and not self.extra:
            bits.extend(bytes(len(bits) + 1024))
            bits[key] = 1
            self.count += 1
        elif key not in self.extra:
            self.extra.add(key)
            self.count += 1

    def __contains__(self, key: int) -> bool:
        if key < len(self.bits):
            return bool(self.bits[key])
        return key in self.extra


def scan_data_pickle(
    data: memoryview, start: int, limits: Limits, check_time: Callable[[], None]
) -> PickleResult | None:
    """The pickle at ``start`` if it is plain data (see the module doc), else None."""
    result = PickleResult(start=start, end=start, protocol=0, root=None)
    try:
        return _run(data, start, limits, check_time, result)
    except FormatError as exc:
        result.error = exc.with_traceback(None)
        return result


def _run(
    data: memoryview, start: int, limits: Limits, check_time: Callable[[], None], result: PickleResult
) -> PickleResult | None:
    size = len(data)
    table = OPCODE_TABLE
    not_data = _NOT_DATA
    literals = _LITERALS
    memo = _Memo()
    marks: list[int] = []
    depth = 0  # items above the topmost MARK
    pos = start
    count = 0
    next_check = _CHECK_EVERY
    frame_end = _NO_FRAME
    try:
        while True:
            count += 1
            if count >= next_check:
                next_check = count + _CHECK_EVERY
                _check(limits, count, memo.count, depth + sum(marks), pos)
                check_time()
            code = data[pos] if pos < size else -1
            # The commonest opcodes of big data pickles, decoded inline.
            if code == 0x94:  # MEMOIZE
                if not depth:
                    raise FormatError("stack underflow", offset=pos)
                memo.add(memo.count)
                nxt = pos + 1
            elif code == 0x8C and pos + 1 < size:  # SHORT_BINUNICODE
                nxt = pos + 2 + data[pos + 1]
                if nxt > size:
                    decode_op(data, pos)  # raises the machine's error
                _utf8(data, pos + 2, nxt)
                depth += 1
            elif code == 0x4B and pos + 1 < size:  # BININT1
                depth += 1
                nxt = pos + 2
            elif code in (0x68, 0x71) and pos + 1 < size:  # BINGET BINPUT
                key = data[pos + 1]
                if code == 0x68:
                    if key not in memo:
                        raise FormatError(f"memo key {key} was never stored", offset=pos)
                    depth += 1
                else:
                    if not depth:
                        raise FormatError("stack underflow", offset=pos)
                    memo.add(key)
                nxt = pos + 2
            elif code == 0x28:  # MARK
                marks.append(depth)
                depth = 0
                nxt = pos + 1
            elif code in not_data:
                return None
            else:
                code, arg, nxt = decode_op(data, pos)
                if code == 0x2E:  # STOP
                    if not depth:
                        raise FormatError("stack underflow", offset=pos)
                    result.end = nxt
                    if nxt < frame_end != _NO_FRAME:
                        result.resume = frame_end  # as the machine: the next load may start there
                    return result
                if code in literals:
                    depth += 1
                elif code in _GETS:
                    assert isinstance(arg, int)
                    if arg not in memo:
                        raise FormatError(f"memo key {arg} was never stored", offset=pos)
                    depth += 1
                elif code in _PUTS:
                    assert isinstance(arg, int)
                    if arg < 0:
                        raise FormatError("negative PUT argument", offset=pos)
                    if not depth:
                        raise FormatError("stack underflow", offset=pos)
                    memo.add(arg)
                elif code == 0x30:  # POP: on an empty frame CPython pops the MARK instead
                    if depth:
                        depth -= 1
                    elif marks:
                        depth = marks.pop()
                    else:
                        raise FormatError("stack underflow", offset=pos)
                elif code == 0x80:  # PROTO
                    assert isinstance(arg, int)
                    if arg > 5:
                        raise FormatError(f"unsupported pickle protocol {arg}", offset=pos)
                    result.protocol = arg
                elif code == 0x95:  # FRAME
                    assert isinstance(arg, int)
                    if arg > size - pos:
                        result.anomalies.append(
                            ("frame-overrun", pos, f"FRAME of {arg} bytes runs past the end")
                        )
                    if (
                        pos < frame_end < nxt or nxt < frame_end < nxt + arg
                    ) and result.frame_crossing is None:
                        result.frame_crossing = pos
                    if frame_end == _NO_FRAME or nxt >= frame_end:
                        frame_end = nxt + arg
                else:
                    _arg, below, takes_mark, _above, pushed = table[code]
                    if takes_mark:
                        if not marks:
                            raise FormatError("MARK expected but not found", offset=pos)
                        items = depth
                        depth = marks.pop()
                        if code in (0x64, 0x75) and items % 2:  # DICT SETITEMS
                            name = "DICT" if code == 0x64 else "SETITEMS"
                            raise FormatError(f"{name} with an odd number of items", offset=pos)
                    if depth < below:
                        raise FormatError("stack underflow", offset=pos)
                    depth += pushed - below
            if nxt > frame_end:
                if pos < frame_end and result.frame_crossing is None:
                    result.frame_crossing = pos
                frame_end = _NO_FRAME
            pos = nxt
    except FormatError:
        if pos < frame_end != _NO_FRAME and result.frame_crossing is None:
            # An opcode inside a FRAME does not decode: read from the file, it may end past
            # the frame and be read from other bytes (analysed by the caller).
            result.frame_crossing = pos
        raise
    finally:
        result.opcodes = count


def _utf8(data: memoryview, start: int, end: int) -> None:
    try:
        _UTF8(data[start:end], "surrogatepass", True)
    except UnicodeDecodeError as exc:
        raise FormatError(f"string argument is not valid utf-8: {exc.reason}", offset=start) from exc


def _check(limits: Limits, count: int, memo: int, items: int, pos: int) -> None:
    if count > limits.max_pickle_opcodes:
        raise LimitError(
            f"more than {limits.max_pickle_opcodes} opcodes in one pickle (limit max_pickle_opcodes)",
            offset=pos,
        )
    if memo > limits.max_memo_entries:
        raise LimitError(
            f"memo holds more than {limits.max_memo_entries} entries (limit max_memo_entries)", offset=pos
        )
    if items > limits.max_stack_items:
        raise LimitError(
            f"stack holds more than {limits.max_stack_items} items (limit max_stack_items)", offset=pos
        )
