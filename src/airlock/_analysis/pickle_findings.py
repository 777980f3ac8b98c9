"""Turn what the pickle machine saw into findings, under a policy.

For every pickle in a stream: each imported global is classified (allowed / dangerous / unknown);
each call whose callee is computed rather than imported is resolved and classified; BUILDs that
mutate imported objects or plant ``__setstate__`` are flagged; constant bytes handed to a nested
loader (``pickle.loads``, also behind base64) are analysed recursively. A stream that breaks off
after a payload reports the payload, then the error.
"""

from __future__ import annotations

from collections.abc import Iterator

from airlock._analysis.catalogue import NESTED_LOADERS
from airlock._analysis.joblib_arrays import make_build_hook
from airlock._analysis.pickle_data import scan_data_pickle
from airlock._analysis.pickle_vm import (
    BuildHook,
    Call,
    Const,
    DictNode,
    Global,
    Machine,
    Node,
    PickleResult,
    TupleNode,
)
from airlock._analysis.symbolic import callee, fold_bytes, render
from airlock._formats.base import Issue, PickleStream, ReadContext
from airlock._formats.pickle_ops import FileReading, file_reading
from airlock.errors import FormatError, LimitError
from airlock.policy import Decision, Policy
from airlock.results import Severity

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["analyse_pickle_stream"]

Located = tuple[tuple[str, ...], Issue]

#: Keys that, planted in an instance dict by BUILD, change what later opcodes call.
_PLANTED: Final = frozenset(
    {"__setstate__", "__reduce__", "__reduce_ex__", "__getattr__", "__getattribute__", "__class__", "__dict__",
     "__init__", "__new__", "__call__", "__getitem__", "__setitem__", "append", "extend", "add"}
)  # fmt: skip
_CONTAINER_KINDS: Final = frozenset({"append", "extend", "setitem", "add"})


def analyse_pickle_stream(stream: PickleStream, ctx: ReadContext, policy: Policy) -> Iterator[Located]:
    yield from _analyse_stream(
        stream.data,
        stream.offset,
        ctx,
        policy,
        max_pickles=stream.max_pickles,
        trailing_ok=stream.trailing_ok,
        lenient=stream.lenient,
        nested_depth=0,
    )


def _analyse_stream(
    data: memoryview,
    start: int,
    ctx: ReadContext,
    policy: Policy,
    *,
    max_pickles: int | None,
    trailing_ok: bool,
    lenient: bool,
    nested_depth: int,
) -> Iterator[Located]:
    limits = ctx.limits
    # where a pickle was analysed; the count before it matters when the format fixes it (legacy: 5)
    visited: set[tuple[int, int]] = set()

    def key(pos: int, index: int) -> tuple[int, int]:
        return (pos, index if max_pickles is not None else 0)

    #: (position, pickles read before it) where another chain of loads of the same file starts
    alternatives: list[tuple[int, int]] = []

    def chain(pos: int, index: int, alternative: bool) -> Iterator[Located]:
        while True:
            if key(pos, index) in visited:
                return  # another chain of loads reads on from here: analysed there
            visited.add(key(pos, index))
            nested_results: list[PickleResult] = []

            def nested(at: int, _sink: list[PickleResult] = nested_results) -> int:
                # joblib object arrays: a complete pickle inline; joblib loads it with a fresh unpickler.
                inner = Machine(data, limits, ctx.check_time, build_hook=None).run(at)
                _sink.append(inner)
                if inner.error is not None:
                    raise inner.error
                return inner.end

            joblib_hook = make_build_hook(data, nested)
            skipped: list[int] = []

            def hook(
                node: Node, at: int, _skipped: list[int] = skipped, _joblib: BuildHook = joblib_hook
            ) -> int:
                after = _joblib(node, at)
                if after != at:
                    _skipped.append(at)
                return after

            # Plain data (most big pickles) needs no object graph: a counting pass judges it.
            result = scan_data_pickle(data, pos, limits, ctx.check_time)
            if result is None:
                result = Machine(data, limits, ctx.check_time, build_hook=hook).run(pos)
            if (
                index > 0
                and max_pickles is None
                and result.error is not None
                and result.opcodes <= 1
                and not result.globals
            ):
                # Not a pickle at all: bytes after the last pickle. A lenient stream (raw tensor
                # bytes) goes on after any pickle its first bytes happen to spell (b"\x89." is
                # ``False``): that is what raw bytes do, not a hiding place.
                # (where another chain starts, bytes that are no pickle are what a loader that
                # reads on there fails on at once: nothing hides in them)
                if not (trailing_ok or lenient or alternative):
                    yield (
                        (),
                        Issue(
                            "pickle.trailing-data",
                            Severity.SUSPICIOUS,
                            f"{len(data) - pos} bytes after the last pickle that no unpickler reads; "
                            "a place to hide data from tools that read only the first pickle",
                            offset=pos,
                        ),
                    )
                return
            reported: set[tuple[str, str | None, str]] = set()
            # Raw tensor bytes that happen to decode (lenient) and import nothing: their structural
            # oddities (a FRAME that overruns, an extension code, a call of what they built, a
            # STACK_GLOBAL of constants that are not strings) are noise, not findings. Without an
            # import no unpickler reaches code: an extension code resolves only through copyreg's
            # registry, which bytes cannot fill (empty in a fresh interpreter, also after importing
            # torch, numpy, sklearn, joblib, transformers), and STACK_GLOBAL refuses constant operands
            # that are not strings. Every other global is an import: by name, by Python 2 strings
            # (str to every default unpickler), or on computed operands ("opaque": a call's result
            # may be a string). Seeded random storages: tests/scan/test_storage_sniff.py.
            quiet = lenient and all(g.dynamic and not g.opaque for g in result.globals)
            for item in () if quiet else (result, *nested_results):
                for members, issue in _findings(item, data, ctx, policy, nested_depth):
                    reported.add(_key(issue))
                    yield members, issue
            if skipped:
                yield from _as_plain_pickle(data, pos, ctx, policy, nested_depth, reported)
            resumes: list[int | None] = [result.resume]
            if result.frame_crossing is not None:
                yield from _as_file_reader(
                    data, pos, result, ctx, policy, nested_depth, reported, lenient, resumes
                )
            if result.error is not None:
                if quiet and not isinstance(result.error, LimitError):
                    # the bytes broke off where any unpickler stops too; a limit of this reader
                    # (opcodes, memo, stack, time) stopped it early instead: what follows is not analysed
                    return
                yield (), _error_issue(result.error, index)
                return
            index += 1
            # A file reader that read a FRAME exactly stands at its end after STOP: the next load of the
            # same file starts there, another chain of pickles than the one after STOP.
            alternatives.extend(
                (at, index) for at in sorted({r for r in resumes if r is not None}) if at != result.end
            )
            pos = result.end
            if pos >= len(data):
                if max_pickles is not None and index < max_pickles:
                    # The format says how many pickles there are (torch legacy: five); fewer is a
                    # truncated file, which the real loader would fail on.
                    yield (
                        (),
                        Issue(
                            "format.error",
                            Severity.ERROR,
                            f"stream ends after {index} pickle(s); this format holds {max_pickles}",
                            offset=pos,
                        ),
                    )
                return
            if max_pickles is not None and index >= max_pickles:
                return
            if index >= limits.max_pickles_per_stream:
                yield (
                    (),
                    Issue(
                        "limit.exceeded",
                        Severity.ERROR,
                        f"more than {limits.max_pickles_per_stream} pickles in one stream (limit max_pickles_per_stream)",
                        offset=pos,
                    ),
                )
                return

    yield from chain(start, 0, False)
    chains = 1
    while alternatives:
        at, index = alternatives.pop(0)
        if key(at, index) in visited:
            continue
        if chains >= limits.max_pickles_per_stream:
            yield (
                (_RESUME_STEP,),
                Issue(
                    "limit.exceeded",
                    Severity.ERROR,
                    f"more than {limits.max_pickles_per_stream} chains of pickles in one stream "
                    "(limit max_pickles_per_stream); the rest are not analysed",
                    offset=at,
                ),
            )
            return
        chains += 1
        if at >= len(data):
            if max_pickles is not None and index < max_pickles:
                yield (
                    (_RESUME_STEP,),
                    Issue(
                        "format.error",
                        Severity.ERROR,
                        f"stream ends after {index} pickle(s); this format holds {max_pickles}",
                        offset=at,
                    ),
                )
            continue
        for members, issue in chain(at, index, True):
            yield (_RESUME_STEP, *members), issue


_RESUME_STEP: Final = (
    "as the next load of the same file reads it (a file reader stands at the end of a FRAME it read whole)"
)

_PLAIN_READING_RULES: Final = frozenset(
    {"pickle.dangerous-global", "pickle.unknown-global", "pickle.dangerous-call"}
)


def _key(issue: Issue) -> tuple[str, str | None, str]:
    return (issue.rule, issue.callable, issue.message if issue.callable is None else "")


def _as_plain_pickle(
    data: memoryview,
    start: int,
    ctx: ReadContext,
    policy: Policy,
    nested_depth: int,
    reported: set[tuple[str, str | None, str]],
) -> Iterator[Located]:
    """The same stream as plain ``pickle.load`` reads it: joblib's inline array bytes as opcodes.

    joblib skips the array bytes after a NumpyArrayWrapper; a plain unpickler executes them. A
    file whose "array data" is a payload is harmless to joblib and not to ``pickle.load``, so both
    readings are analysed. A plain reading of an ordinary joblib file breaks off in the array
    bytes; that error is expected and not reported.

    Only imports by name (and calls resolved to a catalogued name) are reported from this reading:
    a plain reading of an object array's inline pickle fetches the outer stream's memo, which makes
    STACK_GLOBAL operands and callees non-constant — CPython then stops ("STACK_GLOBAL requires
    str"). Anything a payload in the array bytes could run it must import by name first.
    """
    plain = Machine(data, ctx.limits, ctx.check_time, build_hook=None).run(start)
    step = "as plain pickle.load reads it (joblib's array bytes as opcodes)"
    for members, issue in _findings(plain, data, ctx, policy, nested_depth):
        if issue.rule in _PLAIN_READING_RULES and _key(issue) not in reported:
            yield (step, *members), issue
    if isinstance(plain.error, LimitError):
        # stopped by a limit (opcodes, memo, the time budget), not by the array bytes: the rest of
        # this reading is not analysed, which is an error, never silence
        yield (step,), _error_issue(plain.error, 0)


_FILE_STEP: Final = (
    "as a file reader without peek reads it (torch.load of a zip checkpoint, pickle.load(io.BytesIO))"
)


def _as_file_reader(
    data: memoryview,
    start: int,
    result: PickleResult,
    ctx: ReadContext,
    policy: Policy,
    nested_depth: int,
    reported: set[tuple[str, str | None, str]],
    lenient: bool,
    resumes: list[int | None],
) -> Iterator[Located]:
    """The pickle as CPython reads it from a file object without ``peek`` (see
    ``pickle_ops.FileReading``): an opcode that crosses the end of a FRAME is read from other bytes
    there than ``pickle.loads`` reads. Ordinary pickles never do this (the pickler ends frames
    between opcodes), so the crossing itself is reported, and every finding of that reading too,
    at its offset in the file.

    A reader with ``peek`` (``pickle.load(open(path, "rb"))``, ``numpy.load``) reads each crossing
    one way or the other, by the frame's size and where its buffer stands (``file_reading``'s
    ``across``): every mix of the two is a reading of its own, analysed in turn (each mix is found
    from a reading that went the other way at that crossing), at most ``max_pickles_per_stream``."""
    reading = file_reading(data, start, ctx.limits.max_decompressed_bytes)
    if reading is None:
        return
    assert result.frame_crossing is not None
    spans = ", ".join(f"{a}-{b}" for a, b in reading.dropped[:4])
    if not lenient:  # raw tensor bytes that happen to decode (lenient) report only what they import
        yield (
            (),
            Issue(
                "pickle.frame-differential",
                Severity.SUSPICIOUS,
                f"an opcode crosses the end of a FRAME: pickle.loads reads it whole, a file reader "
                f"without peek skips bytes {spans} and reads on after the frame",
                offset=result.frame_crossing,
            ),
        )
    step = _FILE_STEP
    across: tuple[bool, ...] = ()
    pending: list[tuple[bool, ...]] = []
    budget = ctx.limits.max_pickles_per_stream
    passes = 1
    incomplete = False
    while True:
        if reading is not None:
            resumes.append(reading.resume)
            stopped: list[LimitError] = []
            yield from _file_reading_findings(
                reading, start, step, ctx, policy, nested_depth, reported, stopped
            )
            if stopped:  # a limit (the time budget too) stopped this reading: no more readings
                return
            # the readings that go in order at one more of this reading's crossings (the first
            # crossings as this one went; a crossing read in order is a reading of its own)
            for i in range(len(across), reading.crossings):
                if passes + len(pending) >= budget:
                    incomplete = True
                    break
                pending.append(across + (False,) * (i - len(across)) + (True,))
        if not pending:
            break
        across = pending.pop()
        passes += 1
        step = _PEEK_STEP
        reading = file_reading(data, start, ctx.limits.max_decompressed_bytes, across)
    if incomplete:
        yield (
            (_PEEK_STEP,),
            Issue(
                "limit.exceeded",
                Severity.ERROR,
                f"the FRAME crossings give more than {budget} readings (limit max_pickles_per_stream); "
                "the rest are not analysed",
                offset=result.frame_crossing,
            ),
        )


_PEEK_STEP: Final = (
    "as a buffered file reader may read it (pickle.load(open(path)), numpy.load): each FRAME crossing "
    "read in order or dropped"
)


def _file_reading_findings(
    reading: FileReading,
    start: int,
    step: str,
    ctx: ReadContext,
    policy: Policy,
    nested_depth: int,
    reported: set[tuple[str, str | None, str]],
    stopped: list[LimitError],
) -> Iterator[Located]:
    if reading.cut:
        yield (
            (step,),
            Issue(
                "limit.exceeded",
                Severity.ERROR,
                f"the peek-less reading is longer than {ctx.limits.max_decompressed_bytes} bytes "
                "(limit max_decompressed_bytes); its rest is not analysed",
                offset=start,
            ),
        )
    other = Machine(memoryview(reading.data), ctx.limits, ctx.check_time, build_hook=None).run(0)
    for members, issue in _findings(other, memoryview(reading.data), ctx, policy, nested_depth):
        if _key(issue) in reported:
            continue
        reported.add(_key(issue))
        yield (step, *members), issue._replace(offset=reading.original_offset(issue.offset))
    if isinstance(other.error, LimitError):
        # the reading stopped at a limit (opcodes, memo, the time budget): its rest is not analysed
        stopped.append(other.error)
        error = _error_issue(other.error, 0)
        yield (step,), error._replace(offset=reading.original_offset(error.offset))


def _error_issue(error: FormatError, index: int) -> Issue:
    rule = "limit.exceeded" if isinstance(error, LimitError) else "format.error"
    where = f"pickle #{index + 1}: " if index else ""
    return Issue(rule, Severity.ERROR, f"{where}{error}", offset=error.offset)


def _findings(
    result: PickleResult, data: memoryview, ctx: ReadContext, policy: Policy, nested_depth: int
) -> Iterator[Located]:
    # Evidence: the first call that really invokes each dotted name, rendered only for a name
    # that gets a finding (a clean checkpoint calls allowed rebuild functions hundreds of times).
    first: dict[str, Call] = {}
    for call in result.calls:
        name, _args = callee(call)
        if name is not None and name not in first:
            first[name] = call

    for glob in result.globals:
        cls = policy.classify(glob.module, glob.name, dynamic=glob.dynamic)
        if cls.decision is Decision.ALLOWED:
            continue
        shown = (render(first[glob.dotted]) if glob.dotted in first else None) or (
            render(first[cls.name]) if cls.name in first else None
        )
        if cls.decision is Decision.DANGEROUS:
            rule = "pickle.dynamic-global" if glob.dynamic else "pickle.dangerous-global"
            yield (
                (),
                Issue(
                    rule,
                    Severity.MALICIOUS,
                    f"{glob.opcode} imports {glob.dotted}: {cls.reason}",
                    offset=glob.offset,
                    callable=cls.name,
                    evidence=shown,
                ),
            )
        else:
            yield (
                (),
                Issue(
                    "pickle.unknown-global",
                    Severity.SUSPICIOUS,
                    f"{glob.opcode} imports {glob.dotted}, which is {cls.reason}",
                    offset=glob.offset,
                    callable=glob.dotted,
                    evidence=shown,
                ),
            )

    for call in result.calls:
        yield from _call_findings(call, data, ctx, policy, nested_depth)

    for build in result.builds:
        target = build.target
        if isinstance(target, Global):
            yield (
                (),
                Issue(
                    "pickle.global-mutation",
                    Severity.MALICIOUS,
                    f"BUILD sets attributes on the imported object {target.dotted}, changing what later imports return",
                    offset=build.offset,
                    callable=target.dotted,
                    evidence=f"{target.dotted}.__dict__.update({render(build.state)})",
                ),
            )
        planted = _planted_keys(build.state)
        if planted:
            yield (
                (),
                Issue(
                    "pickle.setstate-injection",
                    Severity.MALICIOUS,
                    f"BUILD plants {', '.join(sorted(planted))} in an instance, redirecting later calls",
                    offset=build.offset,
                    evidence=render(build.state),
                ),
            )

    for kind, offset, detail in result.anomalies:
        if kind == "extension-code":
            yield (
                (),
                Issue(
                    "pickle.extension-code",
                    Severity.SUSPICIOUS,
                    f"{detail}: resolved through the process-wide copyreg registry, unknowable statically",
                    offset=offset,
                ),
            )
        elif kind == "frame-overrun":
            yield (), Issue("pickle.frame-overrun", Severity.SUSPICIOUS, detail, offset=offset)


def _planted_keys(state: Node) -> set[str]:
    keys: set[str] = set()
    parts = state.items if isinstance(state, TupleNode) and len(state.items) == 2 else [state]
    for part in parts:
        if isinstance(part, DictNode):
            for key, _value in part.items:
                if isinstance(key, Const) and isinstance(key.value, str) and key.value in _PLANTED:
                    keys.add(key.value)
    return keys


def _call_findings(
    call: Call, data: memoryview, ctx: ReadContext, policy: Policy, nested_depth: int
) -> Iterator[Located]:
    name, args = callee(call)
    if call.kind in _CONTAINER_KINDS:
        if isinstance(call.func, Global):
            yield (
                (),
                Issue(
                    "pickle.global-mutation",
                    Severity.MALICIOUS,
                    f"{call.kind.upper()} applied to the imported object {call.func.dotted}",
                    offset=call.offset,
                    callable=call.func.dotted,
                    evidence=render(call),
                ),
            )
        return
    if call.kind == "setstate":
        yield (
            (),
            Issue(
                "pickle.setstate-injection",
                Severity.MALICIOUS,
                "BUILD calls a __setstate__ planted by an earlier BUILD",
                offset=call.offset,
                callable=name,
                evidence=render(call),
            ),
        )
    elif not isinstance(call.func, Global):
        # The callee is computed (getattr chains, __import__, methodcaller, partial ...).
        if name is None:
            yield (
                (),
                Issue(
                    "pickle.computed-call",
                    Severity.SUSPICIOUS,
                    "calls an object built inside the pickle; what it is cannot be established statically",
                    offset=call.offset,
                    evidence=render(call),
                ),
            )
        else:
            cls = policy.classify_dotted(name)
            if cls.decision is Decision.DANGEROUS:
                yield (
                    (),
                    Issue(
                        "pickle.dangerous-call",
                        Severity.MALICIOUS,
                        f"calls {cls.name} reached through a computed callable: {cls.reason}",
                        offset=call.offset,
                        callable=cls.name,
                        evidence=render(call),
                    ),
                )
            elif cls.decision is Decision.UNKNOWN:
                yield (
                    (),
                    Issue(
                        "pickle.computed-call",
                        Severity.SUSPICIOUS,
                        f"calls {name} reached through a computed callable",
                        offset=call.offset,
                        callable=name,
                        evidence=render(call),
                    ),
                )
    if name in NESTED_LOADERS and args:
        yield from _nested_pickle(name, args[0], call, ctx, policy, nested_depth)


def _nested_pickle(
    loader: str, arg: Node, call: Call, ctx: ReadContext, policy: Policy, nested_depth: int
) -> Iterator[Located]:
    limits = ctx.limits
    step = f"nested pickle passed to {loader} @ {call.offset}"
    if nested_depth + 1 > limits.max_nested_pickle_depth:
        yield (
            (step,),
            Issue(
                "limit.exceeded",
                Severity.ERROR,
                f"pickles nested deeper than {limits.max_nested_pickle_depth} (limit max_nested_pickle_depth)",
            ),
        )
        return
    payload = fold_bytes(arg, limits.max_decompressed_bytes)
    if payload is None:
        yield (
            (),
            Issue(
                "pickle.nested-unknown",
                Severity.SUSPICIOUS,
                f"bytes passed to {loader} are not constant; the nested pickle cannot be analysed",
                offset=call.offset,
                callable=loader,
            ),
        )
        return
    view = memoryview(payload)
    # torch.storage._load_from_bytes reads a legacy torch file: five pickles, then raw storages.
    legacy = loader == "torch.storage._load_from_bytes"
    for members, issue in _analyse_stream(
        view,
        0,
        ctx,
        policy,
        max_pickles=5 if legacy else None,
        trailing_ok=legacy,
        lenient=False,
        nested_depth=nested_depth + 1,
    ):
        yield (step, *members), issue
