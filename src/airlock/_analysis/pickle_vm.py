"""A symbolic pickle machine: it runs every opcode on symbols and executes nothing.

Where a real unpickler would import a global, it creates a :class:`Global`; where it would call
something (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST, BUILD through ``__setstate__``), it creates a
:class:`Call` node recording the callee and the argument nodes. Containers are built as nodes too,
so the result is an object graph of what the pickle *would* build. Two users share it:

* the scanner asks which globals are imported and which calls would run, with which arguments;
* the safe loader (``airlock.load``) walks the same graph and realises only allowlisted
  constructors (tensor rebuild functions, storages, OrderedDict, ...).

Stack, metastack (MARK) and memo follow CPython's ``pickle`` semantics exactly, including the
quirks attackers use (POP removing a MARK, MEMOIZE indexing by memo size, PUT overwriting), so the
graph is the one the real loader would build. Limits on opcodes, memo and stack are enforced as
the stream is read.
"""

from __future__ import annotations

import _compat_pickle
from collections.abc import Callable

from airlock._analysis.pickle_graph import (
    Buffer,
    BuildEvent,
    Call,
    Const,
    DictNode,
    Ext,
    Global,
    ListNode,
    Node,
    PersId,
    PickleResult,
    Py2Str,
    SetNode,
    TupleNode,
)
from airlock._formats.pickle_ops import NO_ARG_OPCODES, decode_op
from airlock.errors import FormatError, LimitError
from airlock.limits import Limits

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# The graph's node types are re-exported: callers import them from here with the machine.
__all__ = [
    "Buffer",
    "BuildEvent",
    "Call",
    "Const",
    "DictNode",
    "Ext",
    "Global",
    "ListNode",
    "Machine",
    "Node",
    "PersId",
    "PickleResult",
    "SetNode",
    "TupleNode",
]


#: Hook for formats that interleave raw data with opcodes (joblib): called after BUILD with the
#: built node and the position of the next opcode; returns the position to continue from.
BuildHook = Callable[[Node, int], int]

_CHECK_EVERY: Final = 65536
_NO_FRAME: Final = 1 << 62
_UINT1_OPS: Final = frozenset({0x4B, 0x68, 0x71})
#: LONG_BINGET, LONG_BINPUT: decoded inline too (torch's data.pkl is a third LONG_BINPUT)
_UINT4_OPS: Final = frozenset({0x6A, 0x72})
#: the memo opcodes with unsigned arguments, run inline (half of torch's data.pkl)
_BIN_GET_OPS: Final = frozenset({0x68, 0x6A})
_BIN_PUT_OPS: Final = frozenset({0x71, 0x72})


class Machine:
    """Run one pickle from ``data[start:]`` symbolically. Create one machine per pickle."""

    def __init__(
        self,
        data: memoryview,
        limits: Limits,
        check_time: Callable[[], None] = lambda: None,
        build_hook: BuildHook | None = None,
    ) -> None:
        self._data = data
        self._limits = limits
        self._check_time = check_time
        self._build_hook = build_hook
        self._stack: list[Node] = []
        self._meta: list[list[Node]] = []
        self._memo: dict[int, Node] = {}
        self._stack_items = 0

    # -- stack helpers, mirroring CPython's checks ---------------------------------------------------

    def _push(self, node: Node) -> None:
        self._stack.append(node)

    def _pop(self, offset: int) -> Node:
        if not self._stack:
            raise FormatError("stack underflow", offset=offset)
        return self._stack.pop()

    def _top(self, offset: int) -> Node:
        if not self._stack:
            raise FormatError("stack underflow", offset=offset)
        return self._stack[-1]

    def _pop_mark(self, offset: int) -> list[Node]:
        if not self._meta:
            raise FormatError("MARK expected but not found", offset=offset)
        items = self._stack
        self._stack = self._meta.pop()
        return items

    def run(self, start: int) -> PickleResult:
        result = PickleResult(start=start, end=start, protocol=0, root=None)
        try:
            self._loop(start, result)
        except FormatError as exc:
            # Drop the traceback: its frames hold views of the (memory-mapped) input, and a
            # result -> error -> frame -> result cycle would keep the mapping alive.
            result.error = exc.with_traceback(None)
        return result

    def _loop(self, start: int, result: PickleResult) -> None:
        # The hot loop: locals instead of attribute lookups, no-argument opcodes decoded inline,
        # literals pushed inline; everything else goes through the handler table.
        data = self._data
        size = len(data)
        handlers = _HANDLERS
        const_ops = _CONST_OPS
        no_arg = NO_ARG_OPCODES
        build_hook = self._build_hook
        memo = self._memo
        pos = start
        frame_end = _NO_FRAME
        count = result.opcodes
        next_check = count + _CHECK_EVERY
        try:
            while True:
                count += 1
                if count >= next_check:
                    next_check = count + _CHECK_EVERY
                    self._check_limits(count, pos)
                code = data[pos] if pos < size else -1
                if code in no_arg:
                    arg: object = None
                    nxt = pos + 1
                elif code in _UINT1_OPS and pos + 1 < size:  # BININT1 BINGET BINPUT: one-byte argument
                    arg = data[pos + 1]
                    nxt = pos + 2
                elif code in _UINT4_OPS and pos + 4 < size:  # LONG_BINGET LONG_BINPUT: uint4
                    arg = data[pos + 1] | data[pos + 2] << 8 | data[pos + 3] << 16 | data[pos + 4] << 24
                    nxt = pos + 5
                elif code == 0x4D and pos + 2 < size:  # BININT2: uint2
                    arg = data[pos + 1] | data[pos + 2] << 8
                    nxt = pos + 3
                else:
                    code, arg, nxt = decode_op(data, pos)
                    if code == 0x95:  # FRAME: where a peek-less file reader's buffer ends
                        assert isinstance(arg, int)
                        # the header, or the frame it announces, runs past the current frame
                        crosses = pos < frame_end < nxt or nxt < frame_end < nxt + arg
                        if crosses and result.frame_crossing is None:
                            result.frame_crossing = pos
                        if frame_end == _NO_FRAME or nxt >= frame_end:
                            frame_end = nxt + arg
                if nxt > frame_end:
                    if pos < frame_end and result.frame_crossing is None:
                        # This opcode runs past the end of a FRAME: readers disagree on its bytes.
                        result.frame_crossing = pos
                    frame_end = _NO_FRAME
                if code == 0x2E:  # STOP
                    result.end = nxt
                    result.root = self._pop(pos)
                    if nxt < frame_end != _NO_FRAME:
                        result.resume = frame_end
                    return
                if code in const_ops:
                    if code == 0x88:
                        arg = True
                    elif code == 0x89:
                        arg = False
                    elif 0x53 <= code <= 0x55:  # STRING BINSTRING SHORT_BINSTRING: str when loaded
                        self._stack.append(Py2Str(arg, pos))
                        pos = nxt
                        continue
                    self._stack.append(Const(arg, pos))  # NONE decodes to a None argument
                elif code in _BIN_GET_OPS:  # BINGET LONG_BINGET (as _op_get)
                    node = memo.get(arg)  # type: ignore[call-overload]
                    if node is None:
                        raise FormatError(f"memo key {arg} was never stored", offset=pos)
                    self._stack.append(node)
                elif code in _BIN_PUT_OPS:  # BINPUT LONG_BINPUT: unsigned, never negative (as _op_put)
                    if not self._stack:
                        raise FormatError("stack underflow", offset=pos)
                    memo[arg] = self._stack[-1]  # type: ignore[index]
                elif code == 0x62 and build_hook is not None:  # BUILD, then joblib's inline arrays
                    self._op_build(arg, pos, result)
                    after = build_hook(self._top(pos), nxt)
                    if after != nxt and nxt < frame_end != _NO_FRAME:
                        # joblib's pure-Python unpickler has read the whole FRAME: it reads the
                        # array where the file stands, at the frame's end, then the rest of the
                        # frame as opcodes, then what follows the array. joblib commits the frame
                        # before an array; another order is a reading not followed here.
                        raise FormatError(
                            f"joblib array after a BUILD inside a FRAME that goes on to {frame_end}: "
                            "joblib reads the array from the frame's end and the frame's rest as opcodes",
                            offset=pos,
                        )
                    nxt = after
                else:
                    handlers[code](self, arg, pos, result)
                pos = nxt
        except FormatError:
            if pos < frame_end != _NO_FRAME and result.frame_crossing is None:
                # An opcode inside a FRAME does not decode: read from the file, it may end past
                # the frame and be read from other bytes (analysed by the caller).
                result.frame_crossing = pos
            raise
        finally:
            result.opcodes = count

    def _check_limits(self, count: int, pos: int) -> None:
        limits = self._limits
        if count > limits.max_pickle_opcodes:
            raise LimitError(
                f"more than {limits.max_pickle_opcodes} opcodes in one pickle (limit max_pickle_opcodes)",
                offset=pos,
            )
        if len(self._memo) > limits.max_memo_entries:
            raise LimitError(
                f"memo holds more than {limits.max_memo_entries} entries (limit max_memo_entries)",
                offset=pos,
            )
        depth = len(self._stack) + sum(len(s) for s in self._meta)
        if depth > limits.max_stack_items:
            raise LimitError(
                f"stack holds more than {limits.max_stack_items} items (limit max_stack_items)",
                offset=pos,
            )
        self._check_time()

    # -- opcode handlers -----------------------------------------------------------------------------

    def _op_mark(self, arg: object, pos: int, result: PickleResult) -> None:
        self._meta.append(self._stack)
        self._stack = []

    def _op_pop(self, arg: object, pos: int, result: PickleResult) -> None:
        if self._stack:
            self._stack.pop()
        else:  # CPython: POP on an empty stack removes the topmost MARK
            self._pop_mark(pos)

    def _op_pop_mark(self, arg: object, pos: int, result: PickleResult) -> None:
        self._pop_mark(pos)

    def _op_dup(self, arg: object, pos: int, result: PickleResult) -> None:
        self._push(self._top(pos))

    def _op_proto(self, arg: object, pos: int, result: PickleResult) -> None:
        assert isinstance(arg, int)
        if arg > 5:
            raise FormatError(f"unsupported pickle protocol {arg}", offset=pos)
        result.protocol = arg

    def _op_frame(self, arg: object, pos: int, result: PickleResult) -> None:
        assert isinstance(arg, int)
        if arg > len(self._data) - pos:
            # The real loader stops here; we keep decoding so nothing after it goes unseen.
            result.anomalies.append(("frame-overrun", pos, f"FRAME of {arg} bytes runs past the end"))

    def _op_persid(self, arg: object, pos: int, result: PickleResult) -> None:
        node = PersId(Const(arg, pos), pos)
        result.persids.append(node)
        self._push(node)

    def _op_binpersid(self, arg: object, pos: int, result: PickleResult) -> None:
        node = PersId(self._pop(pos), pos)
        result.persids.append(node)
        self._push(node)

    def _op_ext(self, arg: object, pos: int, result: PickleResult) -> None:
        assert isinstance(arg, int)
        self._push(Ext(arg, pos))
        result.anomalies.append(("extension-code", pos, f"extension registry code {arg}"))

    def _op_next_buffer(self, arg: object, pos: int, result: PickleResult) -> None:
        self._push(Buffer(pos))

    def _op_readonly_buffer(self, arg: object, pos: int, result: PickleResult) -> None:
        self._top(pos)

    def _global(
        self,
        module: str,
        name: str,
        pos: int,
        opcode: str,
        result: PickleResult,
        dynamic: bool,
        opaque: bool = False,
    ) -> Global:
        # The Python 2 compatibility mapping the real unpickler applies (``fix_imports``).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        node = Global(module, name, pos, opcode, dynamic, opaque)
        result.globals.append(node)
        return node

    def _op_global(self, arg: object, pos: int, result: PickleResult) -> None:
        assert isinstance(arg, tuple)
        module, name = arg
        self._push(self._global(module, name, pos, "GLOBAL", result, False))

    def _op_stack_global(self, arg: object, pos: int, result: PickleResult) -> None:
        name = self._pop(pos)
        module = self._pop(pos)
        mod_s = _const_str(module)
        name_s = _const_str(name)
        dynamic = mod_s is None or name_s is None
        # operands that may both be strings when the real unpickler runs: the import may succeed
        opaque = dynamic and _may_be_str(module) and _may_be_str(name)
        if dynamic:
            result.anomalies.append(
                ("dynamic-global", pos, "STACK_GLOBAL on values that are not constant strings")
            )
        self._push(
            self._global(
                mod_s if mod_s is not None else _describe(module),
                name_s if name_s is not None else _describe(name),
                pos,
                "STACK_GLOBAL",
                result,
                dynamic,
                opaque,
            )
        )

    def _op_inst(self, arg: object, pos: int, result: PickleResult) -> None:
        assert isinstance(arg, tuple)
        module, name = arg
        cls = self._global(module, name, pos, "INST", result, False)
        args = self._pop_mark(pos)
        call = Call(cls, TupleNode(args, pos), None, "inst", pos)
        result.calls.append(call)
        self._push(call)

    def _op_obj(self, arg: object, pos: int, result: PickleResult) -> None:
        items = self._pop_mark(pos)
        if not items:
            raise FormatError("OBJ without a class", offset=pos)
        call = Call(items[0], TupleNode(items[1:], pos), None, "obj", pos)
        result.calls.append(call)
        self._push(call)

    def _op_reduce(self, arg: object, pos: int, result: PickleResult) -> None:
        args = self._pop(pos)
        func = self._pop(pos)
        call = Call(func, args, None, "reduce", pos)
        result.calls.append(call)
        self._push(call)

    def _op_newobj(self, arg: object, pos: int, result: PickleResult) -> None:
        args = self._pop(pos)
        cls = self._pop(pos)
        call = Call(cls, args, None, "newobj", pos)
        result.calls.append(call)
        self._push(call)

    def _op_newobj_ex(self, arg: object, pos: int, result: PickleResult) -> None:
        kwargs = self._pop(pos)
        args = self._pop(pos)
        cls = self._pop(pos)
        call = Call(cls, args, kwargs, "newobj_ex", pos)
        result.calls.append(call)
        self._push(call)

    def _op_build(self, arg: object, pos: int, result: PickleResult) -> None:
        state = self._pop(pos)
        target = self._top(pos)
        result.builds.append(BuildEvent(target, state, pos))
        if isinstance(target, Call):
            if target.setstate is not None:
                # An earlier BUILD planted ``__setstate__`` in the instance dict: this BUILD calls it.
                call = Call(target.setstate, TupleNode([state], pos), None, "setstate", pos)
                result.calls.append(call)
            target.states.append(state)
            planted = _dict_get(state, "__setstate__")
            if planted is not None:
                target.setstate = planted

    def _op_empty_list(self, arg: object, pos: int, result: PickleResult) -> None:
        self._push(ListNode([], pos))

    def _op_empty_dict(self, arg: object, pos: int, result: PickleResult) -> None:
        self._push(DictNode([], pos))

    def _op_empty_tuple(self, arg: object, pos: int, result: PickleResult) -> None:
        self._push(TupleNode([], pos))

    def _op_empty_set(self, arg: object, pos: int, result: PickleResult) -> None:
        self._push(SetNode([], False, pos))

    def _op_list(self, arg: object, pos: int, result: PickleResult) -> None:
        self._push(ListNode(self._pop_mark(pos), pos))

    def _op_tuple(self, arg: object, pos: int, result: PickleResult) -> None:
        self._push(TupleNode(self._pop_mark(pos), pos))

    def _op_tuple_n(self, n: int, pos: int) -> None:
        if len(self._stack) < n:
            raise FormatError("stack underflow", offset=pos)
        stack = self._stack
        items = stack[-n:]
        del stack[-n:]
        stack.append(TupleNode(items, pos))

    def _op_tuple1(self, arg: object, pos: int, result: PickleResult) -> None:
        self._op_tuple_n(1, pos)

    def _op_tuple2(self, arg: object, pos: int, result: PickleResult) -> None:
        self._op_tuple_n(2, pos)

    def _op_tuple3(self, arg: object, pos: int, result: PickleResult) -> None:
        self._op_tuple_n(3, pos)

    def _op_dict(self, arg: object, pos: int, result: PickleResult) -> None:
        items = self._pop_mark(pos)
        if len(items) % 2:
            raise FormatError("DICT with an odd number of items", offset=pos)
        self._push(DictNode(list(zip(items[0::2], items[1::2], strict=True)), pos))

    def _op_frozenset(self, arg: object, pos: int, result: PickleResult) -> None:
        self._push(SetNode(self._pop_mark(pos), True, pos))

    def _container_call(
        self, target: Node, kind: str, args: list[Node], pos: int, result: PickleResult
    ) -> None:
        # The real loader calls target.append / .extend / __setitem__ / .add on whatever it is given.
        call = Call(target, TupleNode(args, pos), None, kind, pos)
        result.calls.append(call)
        result.anomalies.append(
            (f"{kind}-on-object", pos, f"{kind.upper()} applied to a non-container object")
        )

    def _op_append(self, arg: object, pos: int, result: PickleResult) -> None:
        value = self._pop(pos)
        target = self._top(pos)
        if isinstance(target, ListNode):
            target.items.append(value)
        else:
            self._container_call(target, "append", [value], pos, result)

    def _op_appends(self, arg: object, pos: int, result: PickleResult) -> None:
        items = self._pop_mark(pos)
        target = self._top(pos)
        if isinstance(target, ListNode):
            target.items.extend(items)
        else:
            self._container_call(target, "extend", items, pos, result)

    def _op_setitem(self, arg: object, pos: int, result: PickleResult) -> None:
        value = self._pop(pos)
        key = self._pop(pos)
        target = self._top(pos)
        if isinstance(target, DictNode):
            target.items.append((key, value))
        else:
            self._container_call(target, "setitem", [key, value], pos, result)

    def _op_setitems(self, arg: object, pos: int, result: PickleResult) -> None:
        items = self._pop_mark(pos)
        if len(items) % 2:
            raise FormatError("SETITEMS with an odd number of items", offset=pos)
        target = self._top(pos)
        if isinstance(target, DictNode):
            target.items.extend(zip(items[0::2], items[1::2], strict=True))
        else:
            self._container_call(target, "setitem", items, pos, result)

    def _op_additems(self, arg: object, pos: int, result: PickleResult) -> None:
        items = self._pop_mark(pos)
        target = self._top(pos)
        if isinstance(target, SetNode) and not target.frozen:
            target.items.extend(items)
        else:
            self._container_call(target, "add", items, pos, result)

    def _memo_get(self, key: object, pos: int) -> None:
        assert isinstance(key, int)
        node = self._memo.get(key)
        if node is None:
            raise FormatError(f"memo key {key} was never stored", offset=pos)
        self._push(node)

    def _op_get(self, arg: object, pos: int, result: PickleResult) -> None:
        self._memo_get(arg, pos)

    def _op_put(self, arg: object, pos: int, result: PickleResult) -> None:
        assert isinstance(arg, int)
        if arg < 0:
            raise FormatError("negative PUT argument", offset=pos)
        self._memo[arg] = self._top(pos)

    def _op_memoize(self, arg: object, pos: int, result: PickleResult) -> None:
        self._memo[len(self._memo)] = self._top(pos)


def _const_str(node: Node) -> str | None:
    """The string a real unpickler would see, or None when it is not a constant string.

    A Python 2 string is decoded as the unpickler's ``encoding`` would: ASCII for ``pickle``'s
    default; other bytes as latin-1 (numpy's choice; utf-8 would give another non-ASCII name, and
    no allowlisted name is non-ASCII, so the classification is the same).
    """
    if isinstance(node, Const):
        value = node.value
        if isinstance(value, str):
            return value
        if isinstance(node, Py2Str) and isinstance(value, bytes | memoryview):
            return bytes(value).decode("latin-1")
    return None


def _may_be_str(node: Node) -> bool:
    """False only for what is never a ``str`` to any unpickler: a constant of another type (bytes,
    numbers, None) and the containers the unpickler builds itself. A call's result, an extension
    code, a persistent id, and text too long to decode here (a memoryview) may be strings."""
    if isinstance(node, Const):
        return isinstance(node.value, str | memoryview) or isinstance(node, Py2Str)
    return not isinstance(node, ListNode | DictNode | TupleNode | SetNode)


def _describe(node: Node) -> str:
    if isinstance(node, Global):
        return f"<{node.dotted}>"
    return f"<{type(node).__name__}>"


def _dict_get(node: Node, key: str) -> Node | None:
    if isinstance(node, TupleNode) and len(node.items) == 2:
        # (state, slotstate): slotstate entries are set with setattr, which also plants attributes
        for part in node.items:
            found = _dict_get(part, key)
            if found is not None:
                return found
        return None
    if isinstance(node, DictNode):
        for k, v in node.items:
            if isinstance(k, Const) and k.value == key:
                return v
    return None


_CONST_OPS: Final = frozenset(
    [0x4E, 0x88, 0x89, 0x46, 0x47, 0x49, 0x4A, 0x4B, 0x4C, 0x4D, 0x8A, 0x8B, 0x53, 0x54, 0x55, 0x56, 0x58,
     0x8C, 0x8D, 0x42, 0x43, 0x8E, 0x96]
)  # fmt: skip

_Handler = Callable[[Machine, object, int, PickleResult], None]

_HANDLERS: Final[dict[int, _Handler]] = {
    0x28: Machine._op_mark,
    0x30: Machine._op_pop,
    0x31: Machine._op_pop_mark,
    0x32: Machine._op_dup,
    0x80: Machine._op_proto,
    0x95: Machine._op_frame,
    0x50: Machine._op_persid,
    0x51: Machine._op_binpersid,
    0x82: Machine._op_ext,
    0x83: Machine._op_ext,
    0x84: Machine._op_ext,
    0x97: Machine._op_next_buffer,
    0x98: Machine._op_readonly_buffer,
    0x63: Machine._op_global,
    0x93: Machine._op_stack_global,
    0x69: Machine._op_inst,
    0x6F: Machine._op_obj,
    0x52: Machine._op_reduce,
    0x81: Machine._op_newobj,
    0x92: Machine._op_newobj_ex,
    0x62: Machine._op_build,
    0x5D: Machine._op_empty_list,
    0x7D: Machine._op_empty_dict,
    0x29: Machine._op_empty_tuple,
    0x8F: Machine._op_empty_set,
    0x6C: Machine._op_list,
    0x74: Machine._op_tuple,
    0x85: Machine._op_tuple1,
    0x86: Machine._op_tuple2,
    0x87: Machine._op_tuple3,
    0x64: Machine._op_dict,
    0x91: Machine._op_frozenset,
    0x61: Machine._op_append,
    0x65: Machine._op_appends,
    0x73: Machine._op_setitem,
    0x75: Machine._op_setitems,
    0x90: Machine._op_additems,
    0x67: Machine._op_get,
    0x68: Machine._op_get,
    0x6A: Machine._op_get,
    0x70: Machine._op_put,
    0x71: Machine._op_put,
    0x72: Machine._op_put,
    0x94: Machine._op_memoize,
}
