"""From what the pickle machine saw to findings: every rule with its exact message, offset, callable,
evidence and location steps, in-process on bytes built opcode by opcode.

A finding whose rule, callable or offset drifts, a stream rule whose bound is off by one (pickles
per stream, nesting depth, the pickles a format holds), or a second reading (joblib's array bytes,
a peek-less file reader) that stops being analysed or starts repeating the first reading's
findings fails here. The attacks themselves are proven against real loaders in tests/analysis.
"""

from __future__ import annotations

import base64
import dataclasses
import pickletools
import struct
from pathlib import Path

import pytest

from airlock._analysis.pickle_findings import analyse_pickle_stream
from airlock._formats.base import PickleStream, ReadContext
from airlock.errors import LimitError
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.policy import Policy
from airlock.results import Severity
from tests.fixtures.picklegen import binbytes, call, const, program, sglob, tuple_of, unicode

MAL, SUS, ERR = Severity.MALICIOUS, Severity.SUSPICIOUS, Severity.ERROR
OS = sglob("os", "system")
POLICY = Policy()
FILE_STEP = "as a file reader without peek reads it (torch.load of a zip checkpoint, pickle.load(io.BytesIO))"
PLAIN_STEP = "as plain pickle.load reads it (joblib's array bytes as opcodes)"
TRAILING = "bytes after the last pickle that no unpickler reads; a place to hide data from tools that read only the first pickle"
SYSTEM = "imports os.system: process creation"
LOADS = "STACK_GLOBAL imports pickle.loads: nested deserialisation: same object as cloudpickle.loads"

Row = tuple[tuple[str, ...], str, Severity, str, int | None, str | None, str | None]


def findings(data: bytes, limits: Limits = DEFAULT_LIMITS, offset: int = 0, **stream: object) -> list[Row]:
    pickles = PickleStream(memoryview(data), offset, "pickle", None, **stream)  # type: ignore[arg-type]
    ctx = ReadContext(limits, Path("m.pkl"), Path("."))
    return [(members, *issue) for members, issue in analyse_pickle_stream(pickles, ctx, POLICY)]


def limits(**kw: int) -> Limits:
    return dataclasses.replace(DEFAULT_LIMITS, **kw)


def _frame(content: bytes) -> bytes:
    return b"\x95" + struct.pack("<Q", len(content)) + content


# -- the rules of one pickle ------------------------------------------------------------------------

SINGLE: dict[str, tuple[bytes, list[Row]]] = {
    "clean-data": (program(const(1)), []),
    "allowed-global": (program(call(sglob("collections", "OrderedDict"))), []),
    "dangerous-global": (
        program(call(OS, const("x"))),
        [((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 14, "os.system", "os.system('x')")],
    ),
    "dangerous-text-global-without-a-call": (
        program(b"cos\nsystem\n"),
        [((), "pickle.dangerous-global", MAL, f"GLOBAL {SYSTEM}", 2, "os.system", None)],
    ),
    "unknown-global": (
        program(call(sglob("mypkg", "Thing"), const(1))),
        [
            (
                (),
                "pickle.unknown-global",
                SUS,
                "STACK_GLOBAL imports mypkg.Thing, which is not on any active allowlist profile",
                16,
                "mypkg.Thing",
                "mypkg.Thing(1)",
            )
        ],
    ),
    "near-miss-of-an-allowed-name": (
        program(call(sglob("collections", "OrderedDictx"))),
        [
            (
                (),
                "pickle.unknown-global",
                SUS,
                "STACK_GLOBAL imports collections.OrderedDictx, which is not on any active allowlist profile",
                29,
                "collections.OrderedDictx",
                "collections.OrderedDictx()",
            )
        ],
    ),
    "dynamic-global": (
        program(const("os") + const(1) + b"\x93"),
        [
            (
                (),
                "pickle.dynamic-global",
                MAL,
                "STACK_GLOBAL imports os.<Const>: global built from computed values",
                11,
                "os.<Const>",
                None,
            )
        ],
    ),
    "evidence-is-the-first-call": (
        program(call(OS, const("a")) + b"0" + call(OS, const("b"))),
        [
            ((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 14, "os.system", "os.system('a')"),
            ((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 34, "os.system", "os.system('a')"),
        ],
    ),
    "build-on-a-global": (
        program(OS + b"}" + const("x") + const(1) + b"s" + b"b"),
        [
            ((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 14, "os.system", None),
            (
                (),
                "pickle.global-mutation",
                MAL,
                "BUILD sets attributes on the imported object os.system, changing what later imports return",
                25,
                "os.system",
                "os.system.__dict__.update({'x': 1})",
            ),
        ],
    ),
    "planted-keys-sorted-near-misses-ignored": (
        program(
            call(sglob("argparse", "Namespace"))
            + b"}"
            + const("append")
            + const(1)
            + b"s"
            + const("__reduce__")
            + const(2)
            + b"s"
            + const("__setstatex__")
            + const(3)
            + b"s"
            + b"b"
        ),
        [
            (
                (),
                "pickle.setstate-injection",
                MAL,
                "BUILD plants __reduce__, append in an instance, redirecting later calls",
                81,
                None,
                "{'append': 1, '__reduce__': 2, '__setstatex__': 3}",
            )
        ],
    ),
    "planted-in-the-slot-state": (
        program(call(sglob("argparse", "Namespace")) + b"N}" + const("__call__") + const(1) + b"s\x86b"),
        [
            (
                (),
                "pickle.setstate-injection",
                MAL,
                "BUILD plants __call__ in an instance, redirecting later calls",
                46,
                None,
                "(None, {'__call__': 1})",
            )
        ],
    ),
    "planted-in-the-dict-state": (
        program(call(sglob("argparse", "Namespace")) + b"}" + const("__getattr__") + const(1) + b"sN\x86b"),
        [
            (
                (),
                "pickle.setstate-injection",
                MAL,
                "BUILD plants __getattr__ in an instance, redirecting later calls",
                49,
                None,
                "({'__getattr__': 1}, None)",
            )
        ],
    ),
    "not-planted": (
        program(
            call(sglob("argparse", "Namespace"))
            + b"}"
            + const("lr")
            + const(1)
            + b"s"
            + const(2)
            + const(3)
            + b"s"
            + const("_setstate__")
            + const(4)
            + b"sb"
        ),
        [],
    ),
    "not-planted-in-a-triple": (
        program(call(sglob("argparse", "Namespace")) + b"NN}" + const("__call__") + const(1) + b"s\x87b"),
        [],
    ),
    "setstate-planted-and-called": (
        program(
            call(sglob("argparse", "Namespace"))
            + b"}"
            + const("__setstate__")
            + sglob("collections", "OrderedDict")
            + b"sb"
            + const("x")
            + b"b"
        ),
        # calls are reported before BUILDs
        [
            (
                (),
                "pickle.setstate-injection",
                MAL,
                "BUILD calls a __setstate__ planted by an earlier BUILD",
                74,
                "collections.OrderedDict",
                "collections.OrderedDict('x')",
            ),
            (
                (),
                "pickle.setstate-injection",
                MAL,
                "BUILD plants __setstate__ in an instance, redirecting later calls",
                70,
                None,
                "{'__setstate__': collections.OrderedDict}",
            ),
        ],
    ),
    "extension-code": (
        program(b"\x82\x07"),
        [
            (
                (),
                "pickle.extension-code",
                SUS,
                "extension registry code 7: resolved through the process-wide copyreg registry, unknowable statically",
                2,
                None,
                None,
            )
        ],
    ),
    "frame-overrun": (
        b"\x80\x04" + b"\x95" + struct.pack("<Q", 100) + b"N.",
        [((), "pickle.frame-overrun", SUS, "FRAME of 100 bytes runs past the end", 2, None, None)],
    ),
    "append-to-a-global": (
        program(OS + const(1) + b"a"),
        [
            ((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 14, "os.system", "os.system(1)"),
            (
                (),
                "pickle.global-mutation",
                MAL,
                "APPEND applied to the imported object os.system",
                20,
                "os.system",
                "os.system(1)",
            ),
        ],
    ),
    "setitems-on-an-allowed-global": (
        program(sglob("collections", "OrderedDict") + b"(" + const(1) + const(2) + b"u"),
        [
            (
                (),
                "pickle.global-mutation",
                MAL,
                "SETITEM applied to the imported object collections.OrderedDict",
                40,
                "collections.OrderedDict",
                "collections.OrderedDict(1, 2)",
            )
        ],
    ),
    "computed-call-resolved-dangerous": (
        program(
            call(
                call(
                    sglob("builtins", "getattr"),
                    call(sglob("builtins", "__import__"), const("os")),
                    const("system"),
                ),
                const("x"),
            )
        ),
        [
            (
                (),
                "pickle.dangerous-global",
                MAL,
                "STACK_GLOBAL imports builtins.getattr: arbitrary attribute access",
                21,
                "builtins.getattr",
                "builtins.getattr(builtins.__import__('os'), 'system')",
            ),
            (
                (),
                "pickle.dangerous-global",
                MAL,
                "STACK_GLOBAL imports builtins.__import__: import machinery",
                45,
                "builtins.__import__",
                "builtins.__import__('os')",
            ),
            (
                (),
                "pickle.dangerous-call",
                MAL,
                "calls os.system reached through a computed callable: process creation",
                68,
                "os.system",
                "os.system('x')",
            ),
        ],
    ),
    "computed-call-resolved-unknown": (
        program(
            call(
                call(
                    sglob("builtins", "getattr"),
                    call(sglob("builtins", "__import__"), const("mypkg")),
                    const("thing"),
                ),
                const("x"),
            )
        ),
        [
            (
                (),
                "pickle.dangerous-global",
                MAL,
                "STACK_GLOBAL imports builtins.getattr: arbitrary attribute access",
                21,
                "builtins.getattr",
                "builtins.getattr(builtins.__import__('mypkg'), 'thing')",
            ),
            (
                (),
                "pickle.dangerous-global",
                MAL,
                "STACK_GLOBAL imports builtins.__import__: import machinery",
                45,
                "builtins.__import__",
                "builtins.__import__('mypkg')",
            ),
            (
                (),
                "pickle.computed-call",
                SUS,
                "calls mypkg.thing reached through a computed callable",
                70,
                "mypkg.thing",
                "mypkg.thing('x')",
            ),
        ],
    ),
    "computed-call-unresolved": (
        program(call(call(sglob("collections", "OrderedDict")), const("x"))),
        [
            (
                (),
                "pickle.computed-call",
                SUS,
                "calls an object built inside the pickle; what it is cannot be established statically",
                37,
                None,
                "collections.OrderedDict()('x')",
            )
        ],
    ),
    "nested-pickle": (
        program(call(sglob("pickle", "loads"), binbytes(program(call(OS, const("x")))))),
        [
            ((), "pickle.dangerous-global", MAL, LOADS, 17, "pickle.loads", "pickle.loads(<22 bytes>)"),
            (
                ("nested pickle passed to pickle.loads @ 47",),
                "pickle.dangerous-global",
                MAL,
                f"STACK_GLOBAL {SYSTEM}",
                14,
                "os.system",
                "os.system('x')",
            ),
        ],
    ),
    "nested-pickle-behind-base64": (
        program(
            call(
                sglob("pickle", "loads"),
                call(
                    sglob("base64", "b64decode"),
                    const(base64.b64encode(program(call(OS, const("x")))).decode()),
                ),
            )
        ),
        [
            (
                (),
                "pickle.dangerous-global",
                MAL,
                LOADS,
                17,
                "pickle.loads",
                "pickle.loads(base64.b64decode('gASMAm9zjAZzeXN0ZW2TKIwBeHRSLg=='))",
            ),
            (
                (),
                "pickle.dangerous-global",
                MAL,
                "STACK_GLOBAL imports base64.b64decode: nested deserialisation",
                38,
                "base64.b64decode",
                "base64.b64decode('gASMAm9zjAZzeXN0ZW2TKIwBeHRSLg==')",
            ),
            (
                ("nested pickle passed to pickle.loads @ 77",),
                "pickle.dangerous-global",
                MAL,
                f"STACK_GLOBAL {SYSTEM}",
                14,
                "os.system",
                "os.system('x')",
            ),
        ],
    ),
    "nested-pickle-not-constant": (
        program(call(sglob("pickle", "loads"), call(sglob("collections", "OrderedDict")))),
        [
            (
                (),
                "pickle.dangerous-global",
                MAL,
                LOADS,
                17,
                "pickle.loads",
                "pickle.loads(collections.OrderedDict())",
            ),
            (
                (),
                "pickle.nested-unknown",
                SUS,
                "bytes passed to pickle.loads are not constant; the nested pickle cannot be analysed",
                50,
                "pickle.loads",
                None,
            ),
        ],
    ),
    "nested-loader-without-arguments": (
        program(call(sglob("pickle", "loads"))),
        [((), "pickle.dangerous-global", MAL, LOADS, 17, "pickle.loads", "pickle.loads()")],
    ),
    "nested-pickle-with-trailing-data": (
        program(call(sglob("pickle", "loads"), binbytes(program(const(1)) + b"\xff"))),
        [
            ((), "pickle.dangerous-global", MAL, LOADS, 17, "pickle.loads", "pickle.loads(<9 bytes>)"),
            (
                ("nested pickle passed to pickle.loads @ 34",),
                "pickle.trailing-data",
                SUS,
                f"1 {TRAILING}",
                8,
                None,
                None,
            ),
        ],
    ),
    "legacy-torch-storage-five-pickles-then-raw-bytes": (
        program(
            call(
                sglob("torch.storage", "_load_from_bytes"),
                binbytes(
                    program(const(1), 2)
                    + program(const(2), 2)
                    + program(call(OS, const("x")), 2)
                    + program(b"]", 2)
                    + program(const(3), 2)
                    + b"rawbytes"
                ),
            )
        ),
        [
            (
                (),
                "pickle.dangerous-global",
                MAL,
                "STACK_GLOBAL imports torch.storage._load_from_bytes: nested deserialisation",
                35,
                "torch.storage._load_from_bytes",
                "torch.storage._load_from_bytes(<58 bytes>)",
            ),
            (
                ("nested pickle passed to torch.storage._load_from_bytes @ 101",),
                "pickle.dangerous-global",
                MAL,
                f"STACK_GLOBAL {SYSTEM}",
                30,
                "os.system",
                "os.system('x')",
            ),
        ],
    ),
    "legacy-torch-storage-with-one-pickle": (
        program(call(sglob("torch.storage", "_load_from_bytes"), binbytes(program(const(1), 2)))),
        [
            (
                (),
                "pickle.dangerous-global",
                MAL,
                "STACK_GLOBAL imports torch.storage._load_from_bytes: nested deserialisation",
                35,
                "torch.storage._load_from_bytes",
                "torch.storage._load_from_bytes(<8 bytes>)",
            ),
            (
                ("nested pickle passed to torch.storage._load_from_bytes @ 51",),
                "format.error",
                ERR,
                "stream ends after 1 pickle(s); this format holds 5",
                8,
                None,
                None,
            ),
        ],
    ),
    "error-in-the-first-pickle": (
        b"\x80\x04N\xff",
        [((), "format.error", ERR, "unknown opcode 0xff", 3, None, None)],
    ),
    "lying-length-in-the-first-pickle": (
        b"\x80\x04" + b"X" + struct.pack("<I", 0xFFFFFFFF),
        [
            (
                (),
                "format.error",
                ERR,
                "BINUNICODE: needs 4294967295 bytes but only 0 remain (truncated or lying length)",
                7,
                None,
                None,
            )
        ],
    ),
}


@pytest.mark.parametrize("name", list(SINGLE))
def test_findings(name: str) -> None:
    data, expected = SINGLE[name]
    assert findings(data) == expected


def test_a_limit_error_is_limit_exceeded() -> None:
    data = b"\x80\x04" + b"N0" * 35_000 + b"N."
    assert findings(data, limits(max_pickle_opcodes=65535)) == [
        ((), "limit.exceeded", ERR, "more than 65535 opcodes in one pickle (limit max_pickle_opcodes)", 65536,
         None, None)
    ]  # fmt: skip
    assert findings(data, limits(max_pickle_opcodes=65536)) == []


# -- a stream of pickles ----------------------------------------------------------------------------

TWO = program(const(1)) + program(call(OS, const("x")))
SECOND = [((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 22, "os.system", "os.system('x')")]


def test_every_pickle_of_a_stream_is_analysed() -> None:
    assert findings(TWO) == SECOND
    assert findings(b"abc" + TWO, offset=3) == [(*SECOND[0][:4], 25, *SECOND[0][5:])]


@pytest.mark.parametrize(
    ("tail", "trailing_ok", "expected"),
    [
        (b"\xff\xff", False, [((), "pickle.trailing-data", SUS, f"2 {TRAILING}", 8, None, None)]),
        (b"\xff\xff", True, []),
        # two opcodes decode: a broken second pickle, not trailing bytes
        (b"N\xff", False, [((), "format.error", ERR, "pickle #2: unknown opcode 0xff", 9, None, None)]),
        (b"N\xff", True, [((), "format.error", ERR, "pickle #2: unknown opcode 0xff", 9, None, None)]),
        (b"cos\nsystem\n", True, [
            ((), "pickle.dangerous-global", MAL, f"GLOBAL {SYSTEM}", 8, "os.system", None),
            ((), "format.error", ERR, "pickle #2: pickle ends without STOP", 19, None, None),
        ]),
    ],
    ids=["garbage", "garbage-allowed", "broken-pickle", "broken-pickle-trailing-ok", "import-in-the-tail"],
)  # fmt: skip
def test_bytes_after_the_last_pickle(tail: bytes, trailing_ok: bool, expected: list[Row]) -> None:
    assert findings(program(const(1)) + tail, trailing_ok=trailing_ok) == expected


@pytest.mark.parametrize(
    ("max_pickles", "expected"),
    [
        (1, []),  # the format holds one pickle: the second is never read
        (2, SECOND),
        (3, [*SECOND, ((), "format.error", ERR, "stream ends after 2 pickle(s); this format holds 3", 30, None, None)]),
    ],
)  # fmt: skip
def test_pickles_a_format_holds(max_pickles: int, expected: list[Row]) -> None:
    assert findings(TWO, max_pickles=max_pickles) == expected


def test_a_format_with_a_pickle_count_reports_garbage_as_a_broken_pickle() -> None:
    assert findings(program(const(1)) + b"\xff", max_pickles=2) == [
        ((), "format.error", ERR, "pickle #2: unknown opcode 0xff", 8, None, None)
    ]


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (2, [((), "limit.exceeded", ERR, "more than 2 pickles in one stream (limit max_pickles_per_stream)", 16,
              None, None)]),
        (3, [((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 30, "os.system", "os.system('x')")]),
        (4, [((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 30, "os.system", "os.system('x')")]),
    ],
)  # fmt: skip
def test_pickles_per_stream_limit(limit: int, expected: list[Row]) -> None:
    three = program(const(1)) * 2 + program(call(OS, const("x")))
    assert findings(three, limits(max_pickles_per_stream=limit)) == expected


def test_lenient_streams() -> None:
    # raw tensor bytes that happen to start like a pickle: oddities and the parse failure are noise
    assert findings(b"\x80\x04\x82\x07\xff", lenient=True) == []
    assert findings(program(b"\x82\x07"), lenient=True) == []
    # a whole harmless pickle (NEWFALSE STOP) then more raw bytes: raw bytes go on, not a hiding place
    assert findings(b"\x89." + bytes(range(60)), lenient=True) == []
    assert [r[1] for r in findings(b"\x89." + bytes(range(60)))] == ["pickle.trailing-data"]
    assert findings(b"\x80\x04\x82\x07\xff") == [
        ((), "pickle.extension-code", SUS,
         "extension registry code 7: resolved through the process-wide copyreg registry, unknowable statically", 2,
         None, None),
        ((), "format.error", ERR, "unknown opcode 0xff", 4, None, None),
    ]  # fmt: skip
    # ... but an import before the failure is reported, and so is the failure
    assert findings(b"\x80\x04" + OS + b"\xff", lenient=True) == [
        ((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 14, "os.system", None),
        ((), "format.error", ERR, "unknown opcode 0xff", 15, None, None),
    ]
    # a call without an import by name (an extension object called) reaches no code in raw bytes:
    # copyreg's registry is empty in a fresh interpreter and bytes cannot fill it. Noise when
    # lenient, reported in a real pickle.
    called = b"\x80\x04\x82\x07)R\xff"
    assert findings(called, lenient=True) == []
    assert [r[1] for r in findings(called)] == [
        "pickle.computed-call",
        "pickle.extension-code",
        "format.error",
    ]
    # STACK_GLOBAL of a dict and a set (the unpickler refuses non-strings): noise when lenient
    computed = b"\x80\x04}\x8f\x93)R\xff"
    assert findings(computed, lenient=True) == []
    assert "pickle.dynamic-global" in [r[1] for r in findings(computed)]


@pytest.mark.parametrize(
    ("depth", "deepest"),
    [
        (1, ("limit.exceeded", ERR, "pickles nested deeper than 1 (limit max_nested_pickle_depth)", None, None, None)),
        (2, ("pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 14, "os.system", "os.system('x')")),
        (3, ("pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 14, "os.system", "os.system('x')")),
    ],
)  # fmt: skip
def test_nesting_depth_limit(depth: int, deepest: tuple[object, ...]) -> None:
    level2 = program(call(sglob("pickle", "loads"), binbytes(program(call(OS, const("x"))))))
    level3 = program(call(sglob("pickle", "loads"), binbytes(level2)))
    outer, inner = "nested pickle passed to pickle.loads @ 74", "nested pickle passed to pickle.loads @ 47"
    assert findings(level3, limits(max_nested_pickle_depth=depth)) == [
        ((), "pickle.dangerous-global", MAL, LOADS, 17, "pickle.loads", "pickle.loads(<49 bytes>)"),
        ((outer,), "pickle.dangerous-global", MAL, LOADS, 17, "pickle.loads", "pickle.loads(<22 bytes>)"),
        ((outer, inner), *deepest),
    ]


# -- the second readings: joblib's array bytes as opcodes, a file reader without peek -----------------


def _wrapper(dtype: str, count: int) -> bytes:
    """A joblib NumpyArrayWrapper of ``count`` items of ``dtype``; its raw bytes follow the BUILD."""
    dt = call(sglob("numpy", "dtype"), const(dtype), b"\x89", b"\x88") + (
        tuple_of(const(3), const("|"), b"N", b"N", b"N", const(-1), const(-1), const(0)) + b"b"
    )
    state = (
        b"}(" + unicode("subclass") + sglob("numpy", "ndarray") + unicode("shape") + const(count) + b"\x85"
        + unicode("order") + unicode("C") + unicode("dtype") + dt + unicode("allow_mmap") + b"\x89" + b"u"
    )  # fmt: skip
    return sglob("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + state + b"b"


def test_joblib_array_bytes_are_also_read_as_opcodes() -> None:
    payload = b"cposix\nsystem\n(S'touch m'\ntR0"
    data = b"\x80\x04" + _wrapper("u1", len(payload)) + payload + b"."
    assert findings(data) == [
        ((PLAIN_STEP,), "pickle.dangerous-global", MAL,
         "GLOBAL imports posix.system: process creation: same object as os.system", data.index(b"cposix"),
         "posix.system", "posix.system(b'touch m')")
    ]  # fmt: skip


@pytest.mark.parametrize(
    "array", [b"\x00" * 29, b"\x82\x070" + b"\xff" * 5], ids=["zeros", "extension-code-then-garbage"]
)
def test_plain_reading_reports_imports_only(array: bytes) -> None:
    # its parse failure and its structural oddities are expected of array bytes: not reported
    assert findings(b"\x80\x04" + _wrapper("u1", len(array)) + array + b".") == []


def test_joblib_object_arrays_hold_a_pickle_that_is_analysed() -> None:
    inner = program(call(OS, const("x")))
    data = b"\x80\x04" + _wrapper("O", 1) + inner + b"."
    at = data.index(inner) + 14
    assert findings(data) == [((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", at, "os.system",
                                "os.system('x')")]  # fmt: skip
    broken = b"\x80\x04" + call(OS, const("x")) + b"\xff"
    data = b"\x80\x04" + _wrapper("O", 1) + broken + b"."
    assert findings(data) == [
        ((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", data.index(broken) + 14, "os.system",
         "os.system('x')"),
        ((), "format.error", ERR, "unknown opcode 0xff", len(data) - 2, None, None),
    ]  # fmt: skip


PAYLOAD = b"cos\nsystem\n(S'touch m'\ntR."
# GLOBAL's module line starts in a 3-byte frame: pickle.loads reads `xxos`, a peek-less reader `os`
LINE_CROSSING = b"\x80\x04" + _frame(b"cxx") + PAYLOAD[1:]
XXOS = ((), "pickle.unknown-global", SUS, "GLOBAL imports xxos.system, which is not on any active allowlist profile",
        11, "xxos.system", "xxos.system(b'touch m')")  # fmt: skip
DIFFERENTIAL = ((), "pickle.frame-differential", SUS,
                "an opcode crosses the end of a FRAME: pickle.loads reads it whole, a file reader without peek skips "
                "bytes 12-14 and reads on after the frame", 11, None, None)  # fmt: skip
FILE_OS = (
    (FILE_STEP,),
    "pickle.dangerous-global",
    MAL,
    f"GLOBAL {SYSTEM}",
    11,
    "os.system",
    "os.system(b'touch m')",
)


def test_a_frame_crossing_is_read_as_a_file_reader_reads_it() -> None:
    assert findings(LINE_CROSSING) == [XXOS, DIFFERENTIAL, FILE_OS]
    shifted = findings(b"abc" + LINE_CROSSING, offset=3)
    assert [r[4] for r in shifted] == [14, 14, 14]
    assert "skips bytes 15-17" in str(shifted[1][3])


def test_a_lenient_frame_crossing_reports_what_it_imports_only() -> None:
    assert findings(LINE_CROSSING, lenient=True) == [XXOS, FILE_OS]


def test_ordinary_frames_have_one_reading() -> None:
    assert findings(b"\x80\x04" + _frame(b"K\x01.")) == []


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_the_file_reading_is_bounded(extra: int) -> None:
    consumed = 37  # the peek-less reading of LINE_CROSSING: 39 bytes less the two it drops
    found = findings(LINE_CROSSING, limits(max_decompressed_bytes=consumed + extra))
    cut = ((FILE_STEP,), "limit.exceeded", ERR,
           f"the peek-less reading is longer than {consumed + extra} bytes (limit max_decompressed_bytes); its rest "
           "is not analysed", 0, None, None)  # fmt: skip
    assert found == ([XXOS, DIFFERENTIAL, cut, FILE_OS] if extra < 0 else [XXOS, DIFFERENTIAL, FILE_OS])


def test_the_file_reading_does_not_repeat_the_first_readings_findings() -> None:
    data = b"\x80\x04" + call(OS, const("x")) + b"0" + _frame(b"cxx") + PAYLOAD[1:]
    assert findings(data) == [
        ((), "pickle.dangerous-global", MAL, f"STACK_GLOBAL {SYSTEM}", 14, "os.system", "os.system('x')"),
        ((), "pickle.unknown-global", SUS, "GLOBAL imports xxos.system, which is not on any active allowlist profile",
         31, "xxos.system", "xxos.system(b'touch m')"),
        ((), "pickle.frame-differential", SUS,
         "an opcode crosses the end of a FRAME: pickle.loads reads it whole, a file reader without peek skips bytes "
         "32-34 and reads on after the frame", 31, None, None),
    ]  # fmt: skip


def test_every_dropped_span_is_named_up_to_four_and_the_reading_reports_once() -> None:
    data = b"\x80\x04" + (_frame(b"cxx") + b"os\nsystem\n0") * 5 + b"N."
    found = findings(data)
    assert [r[5] for r in found if r[1] == "pickle.unknown-global"] == ["xxos.system"] * 5
    (differential,) = [r for r in found if r[1] == "pickle.frame-differential"]
    assert differential[3] == (
        "an opcode crosses the end of a FRAME: pickle.loads reads it whole, a file reader without peek skips "
        "bytes 12-14, 35-37, 58-60, 81-83 and reads on after the frame"
    )
    # five os.system imports in that reading, one finding (the first)
    assert [r for r in found if r[0] == (FILE_STEP,)] == [
        ((FILE_STEP,), "pickle.dangerous-global", MAL, f"GLOBAL {SYSTEM}", 11, "os.system", None)
    ]


def test_the_file_reading_goes_on_after_a_finding_it_already_had() -> None:
    data = (
        b"\x80\x04"
        + call(sglob("subprocess", "run"), const("x"))
        + b"0"
        + _frame(b"cxx")
        + b"os\nsystem\n0N."
    )
    assert [(r[0], r[1], r[5]) for r in findings(data)] == [
        ((), "pickle.dangerous-global", "subprocess.run"),
        ((), "pickle.unknown-global", "xxos.system"),
        ((), "pickle.frame-differential", None),
        ((FILE_STEP,), "pickle.dangerous-global", "os.system"),
    ]


def _string_crossing(opcodes: bytes) -> bytes:
    """pickle.loads reads ``opcodes`` as the body of a BINBYTES; a file reader without peek skips the
    rest of a FRAME, takes its string from after the frame and runs ``opcodes`` (the length bytes
    of the BINBYTES end the string, so they must be valid UTF-8)."""
    assert all(b < 0x80 for b in struct.pack("<I", len(opcodes)))
    in_frame = b"X" + struct.pack("<I", 64) + b"AAAAA"
    rest = b"Z" * 59 + b"B" + struct.pack("<I", len(opcodes)) + opcodes + b"00N."
    return b"\x80\x04" + _frame(in_frame) + rest


PADDED = b"N0" * 34_987 + PAYLOAD  # 70000 bytes, 69974 + 9 opcodes: the limits are checked once


@pytest.mark.parametrize("limit", [65535, 65536])
def test_a_limit_in_the_file_reading_is_an_error(limit: int) -> None:
    data = _string_crossing(PADDED)
    found = findings(data, limits(max_pickle_opcodes=limit))
    assert [r[1] for r in found] == ["pickle.frame-differential", "limit.exceeded" if limit < 65536 else
                                     "pickle.dangerous-global"]  # fmt: skip
    last = found[-1]
    if limit < 65536:  # it was silent: the reading stopped, os.system after it went unseen
        assert last[:4] == (
            (FILE_STEP,),
            "limit.exceeded",
            ERR,
            "more than 65535 opcodes in one pickle (limit max_pickle_opcodes)",
        )
        assert last[4] is not None and data[last[4] : last[4] + 2] == b"N0"
    else:
        assert last == ((FILE_STEP,), "pickle.dangerous-global", MAL, f"GLOBAL {SYSTEM}", data.index(b"cos\n"),
                        "os.system", "os.system(b'touch m')")  # fmt: skip


def test_the_time_budget_reaches_the_file_reading() -> None:
    calls: list[int] = []

    def budget() -> None:
        calls.append(1)
        raise LimitError("time budget of the file spent", offset=None)

    data = _string_crossing(PADDED)
    pickles = PickleStream(memoryview(data), 0, "pickle", None)
    ctx = ReadContext(DEFAULT_LIMITS, Path("m.pkl"), Path("."), check_time=budget)
    found = [(m, *i) for m, i in analyse_pickle_stream(pickles, ctx, POLICY)]
    assert found[-1] == (
        (FILE_STEP,),
        "limit.exceeded",
        ERR,
        "time budget of the file spent",
        None,
        None,
        None,
    )
    assert len(calls) == 1


PLAIN_PAYLOAD = b"cposix\nsystem\n(S'touch m'\ntR0"


def _opcode_65536(data: bytes) -> int:
    """Where a plain reading's opcode 65536 starts (pickletools only decodes, it runs nothing)."""
    return next(
        pos
        for n, (_op, _arg, pos) in enumerate(pickletools.genops(data), 1)
        if n == 65536 and pos is not None
    )


@pytest.mark.parametrize("limit", [65535, 65536])
def test_a_limit_in_the_plain_reading_is_an_error(limit: int) -> None:
    array = b"N0" * 35_000 + PLAIN_PAYLOAD
    data = b"\x80\x04" + _wrapper("u1", len(array)) + array + b"."
    found = findings(data, limits(max_pickle_opcodes=limit))
    if limit < 65536:
        assert found == [((PLAIN_STEP,), "limit.exceeded", ERR,
                          "more than 65535 opcodes in one pickle (limit max_pickle_opcodes)", _opcode_65536(data),
                          None, None)]  # fmt: skip
    else:
        assert [(r[0], r[1], r[5]) for r in found] == [
            ((PLAIN_STEP,), "pickle.dangerous-global", "posix.system")
        ]


def test_nested_pickles_in_the_second_readings_are_analysed() -> None:
    nested = call(sglob("pickle", "loads"), binbytes(program(call(OS, const("x")))))
    array = nested + b"0\xff"
    data = b"\x80\x04" + _wrapper("u1", len(array)) + array + b"."
    inner = data.index(nested) + len(nested) - 1
    assert [(r[0], r[1], r[5]) for r in findings(data)] == [
        ((PLAIN_STEP,), "pickle.dangerous-global", "pickle.loads"),
        (
            (PLAIN_STEP, f"nested pickle passed to pickle.loads @ {inner}"),
            "pickle.dangerous-global",
            "os.system",
        ),
    ]
    # bytes to pickle.loads, opcodes to a file reader: only that reading sees the nested pickle
    crossing = _string_crossing(nested)
    at = len(crossing) - 5 - 5  # REDUCE in the file reading: before `00N.`, less the 5 bytes it drops
    assert [(r[0], r[1], r[5]) for r in findings(crossing)] == [
        ((), "pickle.frame-differential", None),
        ((FILE_STEP,), "pickle.dangerous-global", "pickle.loads"),
        ((FILE_STEP, f"nested pickle passed to pickle.loads @ {at}"), "pickle.dangerous-global", "os.system"),
    ]


def test_the_plain_reading_follows_the_wrapper_alone() -> None:
    # a dtype without a BUILD of its own: the wrapper's BUILD is the only one that skips bytes
    dtype = call(sglob("numpy", "dtype"), const("u1"), b"\x89", b"\x88")
    state = b"}(" + unicode("shape") + const(len(PLAIN_PAYLOAD)) + b"\x85" + unicode("dtype") + dtype + b"u"
    wrapper = sglob("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + state + b"b"
    data = b"\x80\x04" + wrapper + PLAIN_PAYLOAD + b"."
    assert [(r[0], r[1], r[5]) for r in findings(data)] == [
        ((PLAIN_STEP,), "pickle.dangerous-global", "posix.system")
    ]


def _budget(calls: list[int]) -> ReadContext:
    def spend() -> None:
        calls.append(1)
        raise LimitError("time budget of the file spent", offset=None)

    return ReadContext(DEFAULT_LIMITS, Path("m.pkl"), Path("."), check_time=spend)


def _with_budget(data: bytes, calls: list[int]) -> list[Row]:
    pickles = PickleStream(memoryview(data), 0, "pickle", None)
    return [(m, *i) for m, i in analyse_pickle_stream(pickles, _budget(calls), POLICY)]


LONG_OBJECTS = OS + b"0" + b"N0" * 35_000 + b"N"  # not plain data: the machine runs it


def test_the_machine_gets_the_limits_and_the_time_budget() -> None:
    data = program(LONG_OBJECTS)
    assert findings(data, limits(max_pickle_opcodes=65535))[-1] == (
        (), "limit.exceeded", ERR, "more than 65535 opcodes in one pickle (limit max_pickle_opcodes)", _opcode_65536(data), None,
        None
    )  # fmt: skip
    assert findings(data, limits(max_pickle_opcodes=65536))[-1][1] == "pickle.dangerous-global"
    calls: list[int] = []
    assert _with_budget(data, calls)[-1] == (
        (),
        "limit.exceeded",
        ERR,
        "time budget of the file spent",
        None,
        None,
        None,
    )
    assert calls == [1]


def test_a_joblib_object_array_pickle_gets_the_limits_and_the_time_budget() -> None:
    inner = program(LONG_OBJECTS)
    data = b"\x80\x04" + _wrapper("O", 1) + inner + b"."
    found = findings(data, limits(max_pickle_opcodes=65535))
    assert found[-1][1:4] == (
        "limit.exceeded",
        ERR,
        "more than 65535 opcodes in one pickle (limit max_pickle_opcodes)",
    )
    calls: list[int] = []
    assert _with_budget(data, calls)[-1][1:4] == ("limit.exceeded", ERR, "time budget of the file spent")
    assert calls == [1]
    # a budget that is not spent: checked by the counting pass over the file, then by the machine
    # that runs the array's pickle (70000 opcodes: once each)
    counted: list[int] = []
    ctx = ReadContext(DEFAULT_LIMITS, Path("m.pkl"), Path("."), check_time=lambda: counted.append(1))
    pickles = PickleStream(memoryview(data), 0, "pickle", None)
    assert [i.rule for _m, i in analyse_pickle_stream(pickles, ctx, POLICY)] == ["pickle.dangerous-global"]
    assert len(counted) == 2


def test_a_broken_first_pickle_is_an_error_not_trailing_data() -> None:
    assert findings(b"\xff") == [((), "format.error", ERR, "unknown opcode 0xff", 0, None, None)]


def test_a_nested_pickle_is_never_lenient() -> None:
    data = program(call(sglob("pickle", "loads"), binbytes(b"\xff\xff")))
    assert findings(data)[1:] == [
        (
            ("nested pickle passed to pickle.loads @ 27",),
            "format.error",
            ERR,
            "unknown opcode 0xff",
            0,
            None,
            None,
        )
    ]


def test_evidence_of_an_attribute_walk() -> None:
    # the import is named by its dotted name, the evidence is its call (or the call of what it reaches)
    walk = sglob("mypkg", "a.os.system")
    reason = "STACK_GLOBAL imports mypkg.a.os.system: process creation via mypkg.a.os.system"
    assert findings(program(call(walk, const("x")))) == [
        ((), "pickle.dangerous-global", MAL, reason, 22, "os.system", "mypkg.a.os.system('x')")
    ]
    computed = call(call(sglob("builtins", "getattr"), call(sglob("builtins", "__import__"), const("os")),
                         const("system")), const("x"))  # fmt: skip
    assert findings(program(walk + b"0" + computed))[0] == (
        (),
        "pickle.dangerous-global",
        MAL,
        reason,
        22,
        "os.system",
        "os.system('x')",
    )


def test_second_readings_skip_only_the_same_finding() -> None:
    # extension code 7 in both readings (one finding), code 8 only in the file reading's view
    data = _string_crossing(b"\x82\x080")
    data = data[:2] + b"\x82\x070" + data[2:]
    found = [(r[0], r[1], r[3][:25]) for r in findings(data)]
    assert found == [
        ((), "pickle.extension-code", "extension registry code 7"),
        ((), "pickle.frame-differential", "an opcode crosses the end"),
        ((FILE_STEP,), "pickle.extension-code", "extension registry code 8"),
    ]


def test_the_time_budget_reaches_the_plain_reading() -> None:
    array = b"N0" * 35_000 + PLAIN_PAYLOAD
    data = b"\x80\x04" + _wrapper("u1", len(array)) + array + b"."
    calls: list[int] = []
    assert _with_budget(data, calls) == [
        ((PLAIN_STEP,), "limit.exceeded", ERR, "time budget of the file spent", None, None, None)
    ]
    assert calls == [1]
