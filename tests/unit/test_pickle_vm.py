"""The symbolic pickle machine opcode by opcode: the exact graph, offsets, anomalies and errors.

Table-driven and in-process (no files, no subprocesses): each program is a list of opcode chunks,
``at[i]`` is the offset of chunk ``i`` (the PROTO header is at 0, the first chunk at 2), and the
expected graph names every node with the offset of the opcode that made it. A machine that builds
the wrong node, drops an argument, pops in the wrong order or misplaces an offset fails here. The
limits are checked every 65536 opcodes, so the limit tests sit at N-1 / N / N+1 of that check.
"""

from __future__ import annotations

import dataclasses
import pickletools
import struct
from collections.abc import Callable

import pytest

from airlock._analysis.pickle_vm import (
    Buffer,
    BuildHook,
    Call,
    Const,
    DictNode,
    Ext,
    Global,
    ListNode,
    Machine,
    Node,
    PersId,
    PickleResult,
    SetNode,
    TupleNode,
)
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS, Limits
from tests.fixtures.picklegen import sglob, unicode

STOP = b"."


def shape(node: Node | None) -> object:
    """The node as nested tuples: every field the scanner or the loader reads, offsets included."""
    if node is None:
        return None
    off = node.offset
    if isinstance(node, Const):
        value = node.value
        return ("const", bytes(value) if isinstance(value, memoryview) else value, off)
    if isinstance(node, Global):
        return ("global", node.dotted, node.opcode, node.dynamic, off)
    if isinstance(node, Call):
        return (
            "call",
            node.kind,
            shape(node.func),
            shape(node.args),
            shape(node.kwargs),
            [shape(s) for s in node.states],
            shape(node.setstate),
            off,
        )
    if isinstance(node, TupleNode):
        return ("tuple", [shape(i) for i in node.items], off)
    if isinstance(node, ListNode):
        return ("list", [shape(i) for i in node.items], off)
    if isinstance(node, DictNode):
        return ("dict", [(shape(k), shape(v)) for k, v in node.items], off)
    if isinstance(node, SetNode):
        assert node.frozen is True or node.frozen is False
        return ("frozenset" if node.frozen else "set", [shape(i) for i in node.items], off)
    if isinstance(node, PersId):
        return ("persid", shape(node.pid), off)
    if isinstance(node, Ext):
        return ("ext", node.code, off)
    if isinstance(node, Buffer):
        return ("buffer", off)
    raise AssertionError(type(node))


def prog(*chunks: bytes, protocol: int = 4) -> tuple[bytes, list[int]]:
    """PROTO, the chunks, STOP; and the offset of each chunk (then of STOP)."""
    data = b"\x80" + bytes([protocol])
    at = []
    for chunk in chunks:
        at.append(len(data))
        data += chunk
    at.append(len(data))
    return data + STOP, at


def run(data: bytes, limits: Limits = DEFAULT_LIMITS, build_hook: BuildHook | None = None) -> PickleResult:
    return Machine(memoryview(data), limits, build_hook=build_hook).run(0)


def ok(data: bytes, build_hook: BuildHook | None = None) -> PickleResult:
    result = run(data, build_hook=build_hook)
    assert result.error is None, result.error
    return result


def c(value: object, off: int) -> tuple[str, object, int]:
    return ("const", value, off)


K1 = b"K\x01"  # BININT1 1
K2 = b"K\x02"
K3 = b"K\x03"
OS_SYSTEM = sglob("os", "system")

Case = tuple[tuple[bytes, ...], Callable[[list[int]], object]]

GRAPHS: dict[str, Case] = {
    "pop": ((K1, K2, b"0"), lambda at: c(1, at[0])),
    "pop-on-empty-stack-removes-mark": ((K1, b"(", b"0"), lambda at: c(1, at[0])),
    "pop-mark": ((K1, b"(", K2, K3, b"1"), lambda at: c(1, at[0])),
    "dup": ((K1, b"2", b"\x86"), lambda at: ("tuple", [c(1, at[0]), c(1, at[0])], at[2])),
    "mark-list": ((b"(", K1, K2, b"l"), lambda at: ("list", [c(1, at[1]), c(2, at[2])], at[3])),
    "mark-tuple": ((b"(", K1, K2, b"t"), lambda at: ("tuple", [c(1, at[1]), c(2, at[2])], at[3])),
    "empty-mark-tuple": ((b"(", b"t"), lambda at: ("tuple", [], at[1])),
    "tuple1": ((K1, b"\x85"), lambda at: ("tuple", [c(1, at[0])], at[1])),
    "tuple2-order": ((K1, K2, b"\x86"), lambda at: ("tuple", [c(1, at[0]), c(2, at[1])], at[2])),
    "tuple3-order": (
        (K1, K2, K3, b"\x87"),
        lambda at: ("tuple", [c(1, at[0]), c(2, at[1]), c(3, at[2])], at[3]),
    ),
    "tuple2-leaves-the-rest": (
        (K3, K1, K2, b"\x86", b"\x86"),
        lambda at: ("tuple", [c(3, at[0]), ("tuple", [c(1, at[1]), c(2, at[2])], at[3])], at[4]),
    ),
    "empty-tuple": ((b")",), lambda at: ("tuple", [], at[0])),
    "empty-list": ((b"]",), lambda at: ("list", [], at[0])),
    "empty-dict": ((b"}",), lambda at: ("dict", [], at[0])),
    "empty-set": ((b"\x8f",), lambda at: ("set", [], at[0])),
    "dict": (
        (b"(", K1, K2, K3, b"K\x04", b"d"),
        lambda at: ("dict", [(c(1, at[1]), c(2, at[2])), (c(3, at[3]), c(4, at[4]))], at[5]),
    ),
    "frozenset": ((b"(", K1, K2, b"\x91"), lambda at: ("frozenset", [c(1, at[1]), c(2, at[2])], at[3])),
    "append": ((b"]", K1, b"a", K2, b"a"), lambda at: ("list", [c(1, at[1]), c(2, at[3])], at[0])),
    "appends": (
        (b"]", K3, b"a", b"(", K1, K2, b"e"),
        lambda at: ("list", [c(3, at[1]), c(1, at[4]), c(2, at[5])], at[0]),
    ),
    "setitem": ((b"}", K1, K2, b"s"), lambda at: ("dict", [(c(1, at[1]), c(2, at[2]))], at[0])),
    "setitems": (
        (b"}", b"(", K1, K2, K3, b"K\x04", b"u"),
        lambda at: ("dict", [(c(1, at[2]), c(2, at[3])), (c(3, at[4]), c(4, at[5]))], at[0]),
    ),
    "additems": ((b"\x8f", b"(", K1, K2, b"\x90"), lambda at: ("set", [c(1, at[2]), c(2, at[3])], at[0])),
    "persid": ((b"Pabc\n",), lambda at: ("persid", c("abc", at[0]), at[0])),
    "binpersid": ((K1, b"Q"), lambda at: ("persid", c(1, at[0]), at[1])),
    "ext1": ((b"\x82\x07",), lambda at: ("ext", 7, at[0])),
    "ext2": ((b"\x83\x07\x01",), lambda at: ("ext", 0x0107, at[0])),
    "ext4": ((b"\x84\x07\x00\x00\x01",), lambda at: ("ext", 0x01000007, at[0])),
    "next-buffer": ((b"\x97",), lambda at: ("buffer", at[0])),
    "readonly-buffer": ((b"\x97", b"\x98"), lambda at: ("buffer", at[0])),
    "global": ((b"cos\nsystem\n",), lambda at: ("global", "os.system", "GLOBAL", False, at[0])),
    "global-name-mapping": (
        (b"c__builtin__\nxrange\n",),
        lambda at: ("global", "builtins.range", "GLOBAL", False, at[0]),
    ),
    "global-import-mapping": (
        (b"cQueue\nQueue\n",),
        lambda at: ("global", "queue.Queue", "GLOBAL", False, at[0]),
    ),
    "global-unmapped": (
        (b"cQueuex\nQueue\n",),
        lambda at: ("global", "Queuex.Queue", "GLOBAL", False, at[0]),
    ),
    "stack-global": (
        (unicode("os"), unicode("system"), b"\x93"),
        lambda at: ("global", "os.system", "STACK_GLOBAL", False, at[2]),
    ),
    "stack-global-mapped": (
        (unicode("__builtin__"), unicode("xrange"), b"\x93"),
        lambda at: ("global", "builtins.range", "STACK_GLOBAL", False, at[2]),
    ),
    "stack-global-dynamic-name": (
        (unicode("os"), OS_SYSTEM, b"\x93"),
        lambda at: ("global", "os.<os.system>", "STACK_GLOBAL", True, at[2]),
    ),
    "stack-global-dynamic-module": (
        (b")", unicode("system"), b"\x93"),
        lambda at: ("global", "<TupleNode>.system", "STACK_GLOBAL", True, at[2]),
    ),
    "stack-global-int-name": (
        (unicode("os"), K1, b"\x93"),
        lambda at: ("global", "os.<Const>", "STACK_GLOBAL", True, at[2]),
    ),
    "reduce": (
        (OS_SYSTEM, K1, b"\x85", b"R"),
        lambda at: (
            "call",
            "reduce",
            ("global", "os.system", "STACK_GLOBAL", False, at[0] + 12),
            ("tuple", [c(1, at[1])], at[2]),
            None,
            [],
            None,
            at[3],
        ),
    ),
    "newobj": (
        (OS_SYSTEM, K1, b"\x85", b"\x81"),
        lambda at: (
            "call",
            "newobj",
            ("global", "os.system", "STACK_GLOBAL", False, at[0] + 12),
            ("tuple", [c(1, at[1])], at[2]),
            None,
            [],
            None,
            at[3],
        ),
    ),
    "newobj-ex": (
        (OS_SYSTEM, b")", b"}", b"\x92"),
        lambda at: (
            "call",
            "newobj_ex",
            ("global", "os.system", "STACK_GLOBAL", False, at[0] + 12),
            ("tuple", [], at[1]),
            ("dict", [], at[2]),
            [],
            None,
            at[3],
        ),
    ),
    "obj": (
        (b"(", OS_SYSTEM, K1, K2, b"o"),
        lambda at: (
            "call",
            "obj",
            ("global", "os.system", "STACK_GLOBAL", False, at[1] + 12),
            ("tuple", [c(1, at[2]), c(2, at[3])], at[4]),
            None,
            [],
            None,
            at[4],
        ),
    ),
    "inst": (
        (b"(", K1, b"ios\nsystem\n"),
        lambda at: (
            "call",
            "inst",
            ("global", "os.system", "INST", False, at[2]),
            ("tuple", [c(1, at[1])], at[2]),
            None,
            [],
            None,
            at[2],
        ),
    ),
    "inst-mapped": (
        (b"(", b"i__builtin__\nxrange\n"),
        lambda at: (
            "call",
            "inst",
            ("global", "builtins.range", "INST", False, at[1]),
            ("tuple", [], at[1]),
            None,
            [],
            None,
            at[1],
        ),
    ),
    "build-records-states": (
        (OS_SYSTEM, b")", b"R", K1, b"b", K2, b"b"),
        lambda at: (
            "call",
            "reduce",
            ("global", "os.system", "STACK_GLOBAL", False, at[0] + 12),
            ("tuple", [], at[1]),
            None,
            [c(1, at[3]), c(2, at[5])],
            None,
            at[2],
        ),
    ),
    "get-put": ((K1, b"p5\n", b"0", b"g5\n"), lambda at: c(1, at[0])),
    "binget-binput": ((K1, b"q\x05", b"0", b"h\x05"), lambda at: c(1, at[0])),
    "long-binget-binput": ((K1, b"r\x05\x00\x00\x01", b"0", b"j\x05\x00\x00\x01"), lambda at: c(1, at[0])),
    "put-overwrites": ((K1, b"q\x00", b"0", K2, b"q\x00", b"0", b"h\x00"), lambda at: c(2, at[3])),
    "memoize-by-size": (
        (K1, b"q\x01", b"0", K2, b"\x94", b"0", K3, b"\x94", b"0", b"h\x01"),
        lambda at: c(3, at[6]),
    ),
    "memoize-first-slot": ((K1, b"\x94", b"0", b"h\x00"), lambda at: c(1, at[0])),
    "binint1-then-next": (
        (b"K\xff", b"K\x00", b"\x86"),
        lambda at: ("tuple", [c(255, at[0]), c(0, at[1])], at[2]),
    ),
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph(name: str) -> None:
    chunks, expected = GRAPHS[name]
    data, at = prog(*chunks)
    result = ok(data)
    assert shape(result.root) == expected(at)
    assert result.end == len(data)
    assert result.start == 0


CONSTS: list[tuple[bytes, object]] = [
    (b"N", None),
    (b"\x88", True),
    (b"\x89", False),
    (b"F1.5\n", 1.5),
    (b"G" + struct.pack(">d", 2.5), 2.5),
    (b"I7\n", 7),
    (b"I01\n", True),
    (b"I00\n", False),
    (b"J" + struct.pack("<i", -5), -5),
    (b"K\x07", 7),
    (b"L9L\n", 9),
    (b"M\x01\x02", 0x0201),
    (b"\x8a\x01\x09", 9),
    (b"\x8b" + struct.pack("<i", 1) + b"\x09", 9),
    (b"S'ab'\n", b"ab"),  # protocol 0-2 strings stay bytes (the loader's encoding decides)
    (b"T" + struct.pack("<i", 2) + b"ab", b"ab"),
    (b"U\x02ab", b"ab"),
    (b"Vab\n", "ab"),
    (b"X" + struct.pack("<I", 2) + b"ab", "ab"),
    (b"\x8c\x02ab", "ab"),
    (b"\x8d" + struct.pack("<Q", 2) + b"ab", "ab"),
    (b"B" + struct.pack("<I", 2) + b"ab", b"ab"),
    (b"C\x02ab", b"ab"),
    (b"\x8e" + struct.pack("<Q", 2) + b"ab", b"ab"),
    (b"\x96" + struct.pack("<Q", 2) + b"ab", b"ab"),
]


@pytest.mark.parametrize(("op", "value"), CONSTS, ids=[repr(op[:1]) for op, _ in CONSTS])
def test_constants(op: bytes, value: object) -> None:
    data, at = prog(op)
    root = ok(data).root
    assert isinstance(root, Const)
    got = bytes(root.value) if isinstance(root.value, memoryview | bytearray) else root.value
    assert (type(got), got, root.offset) == (type(value), value, at[0])


def test_protocol_header() -> None:
    assert ok(prog(K1, protocol=5)[0]).protocol == 5
    assert ok(prog(K1, protocol=2)[0]).protocol == 2
    assert ok(b"K\x01.").protocol == 0  # no PROTO
    error = run(prog(K1, protocol=6)[0]).error
    assert isinstance(error, FormatError)
    assert (str(error), error.offset) == ("unsupported pickle protocol 6", 0)


def test_pickle_at_an_offset_and_trailing_bytes() -> None:
    data, _ = prog(K1)
    blob = b"xyz" + data + b"tail"
    result = Machine(memoryview(blob), DEFAULT_LIMITS).run(3)
    assert result.error is None
    assert (result.start, result.end, result.protocol) == (3, 3 + len(data), 4)
    assert shape(result.root) == c(1, 5)
    assert result.opcodes == 3  # PROTO, BININT1, STOP


def test_opcode_count() -> None:
    data, _ = prog(K1, b"0", K2, b"0", K3)
    assert ok(data).opcodes == 7
    result = run(data[:-1])  # no STOP: the count includes the failed decode at the end
    assert result.opcodes == 7
    assert (result.start, result.end) == (0, 0)


def _error(data: bytes) -> FormatError:
    error = run(data).error
    assert isinstance(error, FormatError)
    return error


ERRORS: dict[str, tuple[tuple[bytes, ...], str, int]] = {
    # chunks, message, index of the chunk whose offset the error names (-1: STOP)
    "pop-on-empty-stack-without-mark": ((b"0",), "MARK expected but not found", 0),
    "pop-without-mark": ((b"1",), "MARK expected but not found", 0),
    "stop-on-empty-stack": ((), "stack underflow", -1),
    "stop-after-mark": ((b"(",), "stack underflow", -1),
    "dup-underflow": ((b"2",), "stack underflow", 0),
    "list-without-mark": ((K1, b"l"), "MARK expected but not found", 1),
    "tuple1-underflow": ((b"\x85",), "stack underflow", 0),
    "tuple2-underflow": ((K1, b"\x86"), "stack underflow", 1),
    "tuple3-underflow": ((K1, K2, b"\x87"), "stack underflow", 2),
    "tuple3-does-not-reach-below-mark": ((K1, b"(", K2, K3, b"\x87"), "stack underflow", 4),
    "dict-odd": ((b"(", K1, b"d"), "DICT with an odd number of items", 2),
    "setitems-odd": ((b"}", b"(", K1, b"u"), "SETITEMS with an odd number of items", 3),
    "setitems-without-target": ((b"(", K1, K2, b"u"), "stack underflow", 3),
    "obj-without-class": ((b"(", b"o"), "OBJ without a class", 1),
    "reduce-underflow": ((K1, b"R"), "stack underflow", 1),
    "newobj-ex-underflow": ((K1, K2, b"\x92"), "stack underflow", 2),
    "build-underflow": ((K1, b"b"), "stack underflow", 1),
    "append-underflow": ((K1, b"a"), "stack underflow", 1),
    "appends-without-target": ((b"(", K1, b"e"), "stack underflow", 2),
    "additems-without-target": ((b"(", K1, b"\x90"), "stack underflow", 2),
    "setitem-underflow": ((K1, K2, b"s"), "stack underflow", 2),
    "get-never-stored": ((K1, b"q\x02", b"h\x03"), "memo key 3 was never stored", 2),
    "put-empty-stack": ((b"q\x00",), "stack underflow", 0),
    "memoize-empty-stack": ((b"\x94",), "stack underflow", 0),
    "negative-put": ((K1, b"p-1\n"), "negative PUT argument", 1),
    "readonly-buffer-empty": ((b"\x98",), "stack underflow", 0),
    "binpersid-empty": ((b"Q",), "stack underflow", 0),
    "stack-global-underflow": ((unicode("os"), b"\x93"), "stack underflow", 1),
    "inst-without-mark": ((b"ios\nsystem\n",), "MARK expected but not found", 0),
    "unknown-opcode": ((b"\xff",), "unknown opcode 0xff", 0),
    # the first pop of each opcode, on an empty stack (or without a MARK)
    "tuple-without-mark": ((b"t",), "MARK expected but not found", 0),
    "frozenset-without-mark": ((b"\x91",), "MARK expected but not found", 0),
    "dict-without-mark": ((b"d",), "MARK expected but not found", 0),
    "obj-without-mark": ((b"o",), "MARK expected but not found", 0),
    "appends-without-mark": ((b"]", b"e"), "MARK expected but not found", 1),
    "setitems-without-mark": ((b"}", b"u"), "MARK expected but not found", 1),
    "additems-without-mark": ((b"\x8f", b"\x90"), "MARK expected but not found", 1),
    "stack-global-empty": ((b"\x93",), "stack underflow", 0),
    "reduce-empty": ((b"R",), "stack underflow", 0),
    "newobj-empty": ((b"\x81",), "stack underflow", 0),
    "newobj-one-item": ((K1, b"\x81"), "stack underflow", 1),
    "newobj-ex-empty": ((b"\x92",), "stack underflow", 0),
    "newobj-ex-one-item": ((K1, b"\x92"), "stack underflow", 1),
    "build-empty": ((b"b",), "stack underflow", 0),
    "append-empty": ((b"a",), "stack underflow", 0),
    "setitem-empty": ((b"s",), "stack underflow", 0),
    "setitem-one-item": ((K1, b"s"), "stack underflow", 1),
    "setitems-without-target-after-mark": ((b"(", b"u"), "stack underflow", 1),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors(name: str) -> None:
    chunks, message, index = ERRORS[name]
    data, at = prog(*chunks)
    error = _error(data)
    assert str(error) == message
    assert error.offset == at[index]


def test_truncated_one_byte_argument_is_an_error_not_a_crash() -> None:
    for op in (b"K", b"h", b"q"):
        error = _error(b"\x80\x04" + op)
        assert error.offset == 3  # where the missing argument byte would be
    error = _error(b"")
    assert error.offset == 0
    assert "pickle ends without STOP" in str(error)


def test_anomalies_and_records() -> None:
    ext = b"\x82\x07"
    data, at = prog(ext, b"0", b"cos\nsystem\n", b"0", b"Pp\n", b"0", K1, b"Q")
    result = ok(data)
    assert result.anomalies == [("extension-code", at[0], "extension registry code 7")]
    assert [shape(g) for g in result.globals] == [("global", "os.system", "GLOBAL", False, at[2])]
    assert [shape(p) for p in result.persids] == [
        ("persid", c("p", at[4]), at[4]),
        ("persid", c(1, at[6]), at[7]),
    ]


def test_dynamic_global_anomaly() -> None:
    data, at = prog(unicode("os"), K1, b"\x93")
    result = ok(data)
    assert result.anomalies == [
        ("dynamic-global", at[2], "STACK_GLOBAL on values that are not constant strings")
    ]
    static = ok(prog(unicode("os"), unicode("system"), b"\x93")[0])
    assert static.anomalies == []


CONTAINER_ON_OBJECT: dict[str, tuple[tuple[bytes, ...], str, list[object]]] = {
    "append": ((OS_SYSTEM, K1, b"a"), "append", ["K1@1"]),
    "appends": ((OS_SYSTEM, b"(", K1, K2, b"e"), "extend", ["K1@2", "K2@3"]),
    "setitem": ((OS_SYSTEM, K1, K2, b"s"), "setitem", ["K1@1", "K2@2"]),
    "setitems": ((OS_SYSTEM, b"(", K1, K2, b"u"), "setitem", ["K1@2", "K2@3"]),
    "additems": ((OS_SYSTEM, b"(", K1, b"\x90"), "add", ["K1@2"]),
    "additems-on-frozenset": ((b"(", b"\x91", b"(", K1, b"\x90"), "add", ["K1@3"]),
    "append-on-tuple": ((b")", K1, b"a"), "append", ["K1@1"]),
    "setitem-on-list": ((b"]", K1, K2, b"s"), "setitem", ["K1@1", "K2@2"]),
    "append-on-dict": ((b"}", K1, b"a"), "append", ["K1@1"]),
}


@pytest.mark.parametrize("name", list(CONTAINER_ON_OBJECT))
def test_container_opcodes_on_other_objects_are_calls(name: str) -> None:
    chunks, kind, args = CONTAINER_ON_OBJECT[name]
    data, at = prog(*chunks)
    result = ok(data)
    (call,) = [cl for cl in result.calls if cl.kind == kind]
    op = at[-2]
    assert call.offset == op
    assert call.func is result.root
    assert call.kwargs is None
    values = [f"K{n.value}@{at.index(n.offset)}" for n in call.args.items]  # type: ignore[attr-defined]
    assert values == args
    assert call.args.offset == op
    assert result.anomalies[-1] == (
        f"{kind}-on-object",
        op,
        f"{kind.upper()} applied to a non-container object",
    )


def test_calls_are_recorded_in_order() -> None:
    data, at = prog(OS_SYSTEM, b")", b"R", b"0", OS_SYSTEM, b")", b"\x81", b"0", b"(", OS_SYSTEM, b"o")
    kinds = [(cl.kind, cl.offset) for cl in ok(data).calls]
    assert kinds == [("reduce", at[2]), ("newobj", at[6]), ("obj", at[10])]
    data, at = prog(OS_SYSTEM, b")", b"}", b"\x92", b"0", b"(", b"ios\nsystem\n")
    assert [(cl.kind, cl.offset) for cl in ok(data).calls] == [("newobj_ex", at[3]), ("inst", at[6])]


def _plant(key: str) -> bytes:
    return b"}" + unicode(key) + OS_SYSTEM + b"s"


def test_build_plants_and_calls_setstate() -> None:
    data, at = prog(OS_SYSTEM, b")", b"R", _plant("__setstate__"), b"b", K1, b"b", K2, b"b")
    result = ok(data)
    root = result.root
    assert isinstance(root, Call)
    planted = shape(root.setstate)
    assert planted == ("global", "os.system", "STACK_GLOBAL", False, at[3] + 1 + 14 + 12)
    setstates = [cl for cl in result.calls if cl.kind == "setstate"]
    assert [(shape(cl.func), shape(cl.args), cl.kwargs, cl.offset) for cl in setstates] == [
        (planted, ("tuple", [c(1, at[5])], at[6]), None, at[6]),
        (planted, ("tuple", [c(2, at[7])], at[8]), None, at[8]),
    ]
    assert [(b.offset, shape(b.target) is not None) for b in result.builds] == [
        (at[4], True),
        (at[6], True),
        (at[8], True),
    ]
    assert all(b.target is root for b in result.builds)
    assert [shape(s)[0] for s in root.states] == ["dict", "const", "const"]  # type: ignore[index]


@pytest.mark.parametrize(
    "state",
    [
        b"}" + unicode("__setstate__") + OS_SYSTEM + b"s",
        b"N" + b"}" + unicode("__setstate__") + OS_SYSTEM + b"s" + b"\x86",  # in the slot state
        b"}" + unicode("__setstate__") + OS_SYSTEM + b"s" + b"N" + b"\x86",  # in the dict state
    ],
    ids=["dict", "slotstate", "state-of-pair"],
)
def test_planted_setstate_is_found_in_state_and_slotstate(state: bytes) -> None:
    data, at = prog(OS_SYSTEM, b")", b"R", state, b"b", K1, b"b")
    result = ok(data)
    (called,) = [cl for cl in result.calls if cl.kind == "setstate"]
    assert shape(called.func)[1] == "os.system"  # type: ignore[index]
    assert called.offset == at[6]


@pytest.mark.parametrize(
    "state",
    [
        b"}" + unicode("__setstatex__") + OS_SYSTEM + b"s",  # near-miss key
        b"}" + unicode("_setstate__") + OS_SYSTEM + b"s",
        b"}" + b"K\x01" + OS_SYSTEM + b"s",  # a non-string key
        b"}" + b"N" + OS_SYSTEM + b"s",
        b"N" + b"N" + b"}" + unicode("__setstate__") + OS_SYSTEM + b"s" + b"\x87",  # 3-tuple: not a pair
        b"]" + unicode("__setstate__") + b"a",  # a list state
        b"}" + OS_SYSTEM + unicode("__setstate__") + b"s",  # a key that is not a constant
    ],
    ids=["near-miss", "single-underscore", "int-key", "none-key", "triple", "list", "global-key"],
)
def test_other_states_plant_nothing(state: bytes) -> None:
    data, _ = prog(OS_SYSTEM, b")", b"R", state, b"b", K1, b"b")
    result = ok(data)
    assert [cl.kind for cl in result.calls] == ["reduce"]
    assert isinstance(result.root, Call)
    assert result.root.setstate is None


def test_build_on_a_global_or_container_records_the_event_only() -> None:
    data, at = prog(OS_SYSTEM, _plant("__setstate__"), b"b", K1, b"b")
    result = ok(data)
    assert [cl.kind for cl in result.calls] == []
    assert [(shape(b.target)[0], shape(b.state)[0], b.offset) for b in result.builds] == [  # type: ignore[index]
        ("global", "dict", at[2]),
        ("global", "const", at[4]),
    ]


def test_build_hook_runs_after_build_and_sets_the_next_position() -> None:
    seen: list[tuple[object, int]] = []
    data, at = prog(OS_SYSTEM, b")", b"R", K1, b"b", b"\xff\xff\xff", K2, b"0")

    def hook(node: Node, nxt: int) -> int:
        seen.append((shape(node), nxt))
        return nxt + 3  # skip the raw bytes after the BUILD

    result = ok(data, build_hook=hook)
    assert len(seen) == 1
    assert seen[0][1] == at[5]
    assert seen[0][0] == shape(result.root)
    assert len(result.builds) == 1
    assert result.builds[0].offset == at[4]
    assert result.opcodes == 11  # the skipped bytes are not opcodes
    # without a hook the raw bytes are opcodes (0xff: unknown)
    assert _error(data).offset == at[5]


def test_limits_are_checked_every_65536_opcodes() -> None:
    # 70000 opcodes: NONE POP pairs; the limits are checked once, at opcode 65536
    body = b"N0" * 35_000
    data = b"\x80\x04" + body + b"N."
    calls: list[int] = []
    result = Machine(memoryview(data), DEFAULT_LIMITS, check_time=lambda: calls.append(1)).run(0)
    assert result.error is None
    assert calls == [1]
    assert result.opcodes == 70_003
    # opcode n (1-based) starts at byte n for n >= 2: PROTO takes two bytes, the rest one each
    checked_at = 65536
    for limit, fails in ((65534, True), (65535, True), (65536, False), (65537, False)):
        limits = dataclasses.replace(DEFAULT_LIMITS, max_pickle_opcodes=limit)
        error = run(data, limits).error
        if fails:
            assert isinstance(error, LimitError)
            assert error.offset == checked_at
            assert str(error) == (f"more than {limit} opcodes in one pickle (limit max_pickle_opcodes)")
        else:
            assert error is None


def test_check_time_can_stop_the_machine() -> None:
    def deadline() -> None:
        raise LimitError("deadline", offset=None)

    data = b"\x80\x04" + b"N0" * 70_000 + b"N."
    result = Machine(memoryview(data), DEFAULT_LIMITS, check_time=deadline).run(0)
    assert isinstance(result.error, LimitError)
    assert result.opcodes == 65536
    calls: list[int] = []
    data = b"\x80\x04" + b"N0" * 70_000 + b"N."  # 140003 opcodes: checked at 65536 and 131072
    Machine(memoryview(data), DEFAULT_LIMITS, check_time=lambda: calls.append(1)).run(0)
    assert len(calls) == 2


def _checked_at(data: bytes) -> int:
    """Where opcode 65536 starts (the limits are checked before it runs); pickletools only decodes."""
    return next(
        pos
        for n, (_op, _arg, pos) in enumerate(pickletools.genops(data), 1)
        if n == 65536 and pos is not None
    )


def _memo_program(entries: int) -> bytes:
    # `entries` memo slots (BININT1 0, MEMOIZE, POP: 3 opcodes each), then NONE POP padding
    body = b"K\x00\x940" * entries
    pad = 40_000
    return b"\x80\x04" + body + b"N0" * pad + b"N."


@pytest.mark.parametrize(("limit", "fails"), [(99, True), (100, False), (101, False)])
def test_memo_limit(limit: int, fails: bool) -> None:
    data = _memo_program(100)
    limits = dataclasses.replace(DEFAULT_LIMITS, max_memo_entries=limit)
    error = run(data, limits).error
    if fails:
        assert isinstance(error, LimitError)
        assert str(error) == f"memo holds more than {limit} entries (limit max_memo_entries)"
        assert error.offset == _checked_at(data) == 2 + 4 * 100 + 65536 - 302
    else:
        assert error is None


def _stack_program(below: int, above: int) -> bytes:
    # `below` items, MARK, `above` items, held while the limits are checked, then dropped
    head = b"N" * below + b"(" + b"N" * above
    # a PUT (no change in depth) so that the check at opcode 65536 sees the stack after a POP
    return b"\x80\x04" + head + b"q\x00" + b"N0" * 32_800 + b"1" + b"0" * below + b"N."


@pytest.mark.parametrize(("limit", "fails"), [(29, True), (30, False), (31, False)])
def test_stack_limit_counts_the_stack_and_every_mark(limit: int, fails: bool) -> None:
    data = _stack_program(below=20, above=10)
    assert run(data).error is None
    limits = dataclasses.replace(DEFAULT_LIMITS, max_stack_items=limit)
    error = run(data, limits).error
    if fails:
        assert isinstance(error, LimitError)
        assert str(error) == f"stack holds more than {limit} items (limit max_stack_items)"
        assert error.offset == _checked_at(data) == 65537
    else:
        assert error is None


def _frame(n: int) -> bytes:
    return b"\x95" + struct.pack("<Q", n)


def test_frame_overrun_at_n_and_n_plus_1() -> None:
    body = b"K\x01."
    # from the FRAME opcode at 2 to the end there are 9 + 3 = 12 bytes
    for n, overrun in ((11, False), (12, False), (13, True)):
        data = b"\x80\x04" + _frame(n) + body
        result = ok(data)
        expected = [("frame-overrun", 2, f"FRAME of {n} bytes runs past the end")] if overrun else []
        assert result.anomalies == expected


def test_well_formed_frames_do_not_cross() -> None:
    body1, body2 = b"K\x01", b"K\x02\x86."
    data = b"\x80\x04" + _frame(len(body1)) + body1 + _frame(len(body2)) + body2
    result = ok(data)
    assert result.frame_crossing is None
    assert shape(result.root) == ("tuple", [c(1, 11), c(2, 22)], 24)


@pytest.mark.parametrize(
    ("frame_len", "crossing"),
    [(1, 11), (2, None), (3, 13)],
    ids=["inside-first-opcode", "at-the-boundary", "inside-second"],
)
def test_an_opcode_crossing_the_end_of_a_frame_is_located(frame_len: int, crossing: int | None) -> None:
    # FRAME at 2 (header to 11), BININT1 at 11-12, BININT1 at 13-14, TUPLE2 at 15, STOP at 16
    data = b"\x80\x04" + _frame(frame_len) + b"K\x01K\x02\x86."
    result = ok(data)
    assert result.frame_crossing == crossing


def test_a_frame_header_crossing_the_current_frame_is_located() -> None:
    # the first frame (2 bytes) ends in the middle of the second FRAME header at 13
    data = b"\x80\x04" + _frame(6) + b"K\x01" + _frame(3) + b"K\x02\x86."
    assert ok(data).frame_crossing == 13


def test_a_frame_announced_past_the_current_frame_is_located() -> None:
    # the first frame holds the second FRAME header exactly, the second frame runs past nothing
    inner = b"K\x02\x86."
    data = b"\x80\x04" + _frame(2 + 9) + b"K\x01" + _frame(len(inner)) + inner
    assert ok(data).frame_crossing is None
    # a second FRAME inside the first announces more bytes than the first has left: crossing there
    data = b"\x80\x04" + _frame(2 + 9 + 1) + b"K\x01" + _frame(len(inner)) + inner
    assert ok(data).frame_crossing == 13


def test_an_undecodable_opcode_inside_a_frame_is_a_crossing() -> None:
    data = b"\x80\x04" + _frame(4) + b"K\x01\xff\x00."
    result = run(data)
    assert isinstance(result.error, FormatError)
    assert result.frame_crossing == 13
    data = b"\x80\x04" + b"K\x01\xff."
    result = run(data)
    assert isinstance(result.error, FormatError)
    assert result.frame_crossing is None
    data = b"\x80\x04" + _frame(2) + b"K\x01\xff."  # after the frame ended
    result = run(data)
    assert isinstance(result.error, FormatError)
    assert result.frame_crossing is None
