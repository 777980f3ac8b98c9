"""The pickle-machine quirks named in airlock._analysis.pickle_vm's docstring, and Jinja ``~`` folding.

Each fixture is built opcode by opcode, proven with the real ``pickle.loads`` in a subprocess where
it is an attack, and asserted down to the rule id, the callable, the byte offset and the evidence
(what the machine says would be called, with which argument): a machine that mis-models the quirk
names another callable or another argument, and fails here even though the verdict may not change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import airlock
from airlock import Verdict
from airlock._analysis.pickle_vm import Machine
from airlock._analysis.symbolic import callee
from airlock._analysis.template import analyse_template
from airlock.errors import FormatError
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Finding, Severity
from tests.fixtures.loaders import runs_payload
from tests.fixtures.picklegen import call, const, program, sglob

PAYLOAD = "touch marker"  # runs_payload starts the loader in the fixture's folder
OS_SYSTEM = sglob("os", "system")
ORDERED_DICT = sglob("collections", "OrderedDict")
MARK, POP, TUPLE1, REDUCE, BUILD, MEMOIZE = b"(", b"0", b"\x85", b"R", b"b", b"\x94"
EMPTY_DICT, SETITEM = b"}", b"s"


def binput(n: int) -> bytes:
    return b"q" + bytes([n])


def binget(n: int) -> bytes:
    return b"h" + bytes([n])


def _scan(tmp_path: Path, data: bytes, name: str = "q.pkl") -> tuple[airlock.Report, Path]:
    path = tmp_path / name
    path.write_bytes(data)
    return airlock.scan(path), path


def _only(findings: tuple[Finding, ...], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def _assert_real_attack(path: Path) -> None:
    assert runs_payload("pickle.loads", path, path.parent / "marker"), "fixture does not run under pickle"


def test_pop_on_an_empty_stack_removes_the_mark(tmp_path: Path) -> None:
    # os.system MARK POP 'touch marker' TUPLE1 REDUCE: POP drops the MARK, so REDUCE calls os.system
    data = program(OS_SYSTEM + MARK + POP + const(PAYLOAD) + TUPLE1 + REDUCE)
    report, path = _scan(tmp_path, data)
    _assert_real_attack(path)
    assert report.verdict is Verdict.MALICIOUS
    (finding,) = report.findings()
    assert finding.rule == "pickle.dangerous-global"
    assert finding.callable == "os.system"
    assert finding.location.offset == data.index(b"\x93")
    assert finding.evidence == f"os.system('{PAYLOAD}')"


def test_put_overwrites_a_memo_slot(tmp_path: Path) -> None:
    # slot 0 = OrderedDict, then slot 0 = os.system: GET 0 is os.system, which is what REDUCE calls
    data = program(
        ORDERED_DICT
        + binput(0)
        + POP
        + OS_SYSTEM
        + binput(0)
        + POP
        + binget(0)
        + const(PAYLOAD)
        + TUPLE1
        + REDUCE
    )
    report, path = _scan(tmp_path, data)
    _assert_real_attack(path)
    (finding,) = report.findings()
    assert (finding.rule, finding.callable) == ("pickle.dangerous-global", "os.system")
    assert finding.location.offset == data.index(b"\x93", data.index(b"system"))
    assert finding.evidence == f"os.system('{PAYLOAD}')"


def test_memoize_indexes_by_memo_size_and_overwrites(tmp_path: Path) -> None:
    # PUT 1 makes the memo one entry long, so each MEMOIZE writes slot 1 again: the last one wins.
    data = program(
        const("x") + binput(1) + POP + ORDERED_DICT + MEMOIZE + POP + OS_SYSTEM + MEMOIZE + POP
        + binget(1) + const(PAYLOAD) + TUPLE1 + REDUCE
    )  # fmt: skip
    report, path = _scan(tmp_path, data)
    _assert_real_attack(path)
    (finding,) = report.findings()
    assert (finding.rule, finding.callable) == ("pickle.dangerous-global", "os.system")
    assert finding.evidence == f"os.system('{PAYLOAD}')"


def test_memoize_overwrite_the_other_way_calls_the_harmless_one(tmp_path: Path) -> None:
    # same quirk, order swapped: slot 1 ends as OrderedDict; os.system is imported but never called
    data = program(
        const("x") + binput(1) + POP + OS_SYSTEM + MEMOIZE + POP + ORDERED_DICT + MEMOIZE + POP
        + binget(1) + const(PAYLOAD) + TUPLE1 + REDUCE
    )  # fmt: skip
    report, path = _scan(tmp_path, data)
    assert not runs_payload("pickle.loads", path, tmp_path / "marker")
    (finding,) = report.findings()
    assert (finding.rule, finding.callable) == ("pickle.dangerous-global", "os.system")
    assert finding.location.offset == data.index(b"\x93")
    assert finding.evidence is None  # the machine, like CPython, calls OrderedDict here
    assert report.verdict is Verdict.MALICIOUS  # importing os.system is enough


def _machine_error(data: bytes) -> FormatError:
    error = Machine(memoryview(data), DEFAULT_LIMITS).run(0).error
    assert isinstance(error, FormatError)
    return error


def test_negative_put_is_a_format_error() -> None:
    # only the text PUT can be negative (CPython: ValueError "negative PUT argument")
    data = program(const("x") + b"p-1\n")
    error = _machine_error(data)
    assert "negative PUT argument" in str(error)
    assert error.offset == data.index(b"p-1")


def test_get_of_a_slot_never_stored_is_a_format_error() -> None:
    data = program(const("x") + binput(2) + POP + binget(3))
    error = _machine_error(data)
    assert "memo key 3 was never stored" in str(error)
    assert error.offset == data.index(b"h\x03")


def test_machine_result_of_the_pop_mark_quirk() -> None:
    data = program(OS_SYSTEM + MARK + POP + const(PAYLOAD) + TUPLE1 + REDUCE)
    result = Machine(memoryview(data), DEFAULT_LIMITS).run(0)
    (glob,) = result.globals
    assert (glob.dotted, glob.offset, glob.dynamic) == ("os.system", data.index(b"\x93"), False)
    (called,) = result.calls
    assert callee(called)[0] == "os.system"
    assert called.offset == data.index(REDUCE, data.index(b"marker"))


@pytest.mark.parametrize(
    ("opcode", "code"),
    [(b"\x82\x07", 7), (b"\x83\x07\x01", 0x0107), (b"\x84\x07\x00\x00\x01", 0x01000007)],
    ids=["EXT1", "EXT2", "EXT4"],
)
def test_extension_registry_opcodes_are_never_clean(tmp_path: Path, opcode: bytes, code: int) -> None:
    data = program(opcode)
    report, _ = _scan(tmp_path, data)
    assert report.verdict is Verdict.SUSPICIOUS
    (finding,) = report.findings()
    assert finding.rule == "pickle.extension-code"
    assert finding.severity is Severity.SUSPICIOUS
    assert finding.location.offset == 2
    assert f"extension registry code {code}:" in finding.message


def test_calling_an_extension_object_is_a_computed_call(tmp_path: Path) -> None:
    data = program(b"\x82\x07" + const(PAYLOAD) + TUPLE1 + REDUCE)
    report, _ = _scan(tmp_path, data)
    assert report.verdict is Verdict.SUSPICIOUS
    by_rule = {f.rule: f for f in report.findings()}
    assert set(by_rule) == {"pickle.extension-code", "pickle.computed-call"}
    assert by_rule["pickle.extension-code"].location.offset == 2
    assert by_rule["pickle.computed-call"].location.offset == data.index(REDUCE, 4)
    assert by_rule["pickle.computed-call"].evidence == f"<extension 7>('{PAYLOAD}')"


def test_build_planted_setstate_is_called_by_the_next_build(tmp_path: Path) -> None:
    # Namespace() BUILD {'__setstate__': os.system} BUILD 'touch marker': the second BUILD calls it
    plant = EMPTY_DICT + const("__setstate__") + OS_SYSTEM + SETITEM
    data = program(call(sglob("argparse", "Namespace")) + plant + BUILD + const(PAYLOAD) + BUILD)
    report, path = _scan(tmp_path, data)
    _assert_real_attack(path)
    first_build = data.index(BUILD, data.index(b"system"))
    second_build = len(data) - 2
    findings = report.findings()
    (imported,) = _only(findings, "pickle.dangerous-global")
    assert (imported.callable, imported.evidence) == ("os.system", f"os.system('{PAYLOAD}')")
    injections = sorted(_only(findings, "pickle.setstate-injection"), key=lambda f: f.location.offset or 0)
    assert len(injections) == 2
    planted, called = injections
    assert planted.location.offset == first_build
    assert planted.callable is None
    assert planted.evidence == "{'__setstate__': os.system}"
    assert "plants __setstate__" in planted.message
    assert called.location.offset == second_build
    assert called.callable == "os.system"
    assert called.evidence == f"os.system('{PAYLOAD}')"
    assert "planted by an earlier BUILD" in called.message


def test_build_of_a_plain_dict_state_plants_nothing(tmp_path: Path) -> None:
    data = program(
        call(sglob("argparse", "Namespace")) + EMPTY_DICT + const("lr") + const(1) + SETITEM + BUILD
    )
    report, _ = _scan(tmp_path, data)
    assert report.verdict is Verdict.CLEAN
    assert report.findings() == ()


@pytest.mark.parametrize(
    ("module", "qualname", "arg"),
    [
        ("builtins", "__dict__.get", "exec"),
        ("collections", "OrderedDict.__class__", "x"),
        ("argparse", "Namespace.__init__.__globals__.get", "os"),
    ],
)
def test_dunder_walks_in_stack_global(tmp_path: Path, module: str, qualname: str, arg: str) -> None:
    data = program(call(sglob(module, qualname), const(arg)))
    report, _ = _scan(tmp_path, data)
    assert report.verdict is Verdict.MALICIOUS
    (finding,) = report.findings()
    assert finding.rule == "pickle.dangerous-global"
    assert finding.callable == f"{module}.{qualname}"
    assert finding.location.offset == data.index(b"\x93")
    assert "dunder attribute walk" in finding.message
    assert finding.evidence == f"{module}.{qualname}('{arg}')"


def test_near_miss_of_an_allowed_rebuild_function_is_not_clean(tmp_path: Path) -> None:
    data = program(call(sglob("torch._utils", "_rebuild_tensor_v2x"), const(1)))
    report, _ = _scan(tmp_path, data)
    assert report.verdict is Verdict.SUSPICIOUS
    (finding,) = report.findings()
    assert (finding.rule, finding.callable) == ("pickle.unknown-global", "torch._utils._rebuild_tensor_v2x")


# -- Jinja templates: ``~`` (string concatenation) is folded before names are judged ----------------


def _issues(text: str) -> list[tuple[str, Severity, str | None]]:
    return [(i.rule, i.severity, i.callable) for i in analyse_template("t", text, DEFAULT_LIMITS)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ ('__cla' ~ 'ss__') }}", [("template.ssti", Severity.MALICIOUS, "__class__")]),
        ("{{ '_' ~ '_glo' ~ 'bals__' }}", [("template.ssti", Severity.MALICIOUS, "__globals__")]),
        (
            "{{ x[('__cla' ~ 'ss__')] }}",
            [
                ("template.ssti", Severity.MALICIOUS, "x[<concat>]"),
                ("template.ssti", Severity.MALICIOUS, "__class__"),
            ],
        ),
        (
            "{{ ''|attr('__cla' ~ 'ss__') }}",
            [
                ("template.ssti", Severity.MALICIOUS, "''|attr(<concat>)"),
                ("template.ssti", Severity.MALICIOUS, "__class__"),
            ],
        ),
    ],
)
def test_tilde_concatenation_is_folded(text: str, expected: list[tuple[str, Severity, str]]) -> None:
    assert sorted(_issues(text), key=str) == sorted(expected, key=str)


@pytest.mark.parametrize("text", ["{{ 'a' ~ 'b' }}", "{{ messages[0]['role'] ~ ':' }}", "{{ 'cla' ~ 'ss' }}"])
def test_harmless_concatenation_is_clean(text: str) -> None:
    assert _issues(text) == []


@pytest.mark.parametrize("name", ["cycler", "joiner", "lipsum"])
def test_python_object_globals_used_as_objects(name: str) -> None:
    assert _issues(f"{{{{ {name} }}}}") == [("template.ssti", Severity.MALICIOUS, name)]
    walked = _issues(f"{{{{ {name}.__init__.__globals__.os }}}}")
    assert ("template.ssti", Severity.MALICIOUS, f"{name}.__init__.__globals__") in walked
    assert ("template.ssti", Severity.MALICIOUS, name) in walked
