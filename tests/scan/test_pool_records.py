"""What a forked worker answers for its batch (airlock._scan.records.pack/unpack): the parent never
runs anything a worker wrote (no pickle), checks every value, and makes a batch whose answer does
not fit an ERROR for each of its files, never clean."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import airlock
from airlock._formats.base import Issue
from airlock._scan import pool, records
from airlock._scan.engine import SKIPPED_UNKNOWN
from airlock._scan.pool import Task
from airlock._scan.records import BadResult, pack, unpack
from airlock.limits import DEFAULT_LIMITS
from airlock.results import FileReport, Finding, Location, Severity, Skipped, Verdict
from tests.fixtures.attacks import ATTACKS


def _tasks() -> list[Task]:
    issue = Issue("hf.remote-code", Severity.SUSPICIOUS, "names remote code", callable="modeling_x")
    return [
        Task(3, Path("/t/a.pkl"), "t/a.pkl", 10, None, None, (), ()),
        Task(7, Path("/t/notes.txt"), "t/notes.txt", 5, None, None, (), ()),
        Task(9, Path("/t/s/model.bin"), "t/s/model.bin", 20, None, Path("/t/blobs/ab12"), (), ()),
        Task(11, Path("/t/modeling_x.py"), "t/modeling_x.py", 30, None, None, (issue,), ()),
    ]


def _good() -> list[tuple[int, FileReport | Skipped]]:
    evil = Finding(
        "pickle.dangerous-call", Severity.MALICIOUS, "would run os.system", Location("t/a.pkl", ("data.pkl",), 12),
        "os.system", "os.system('x')", 2,
    )  # fmt: skip
    odd = Finding(  # a lone surrogate, as a name taken from a file may hold, and no offset
        "pickle.unknown-global", Severity.SUSPICIOUS, "unknown \udcff name", Location("t/a.pkl", ("a", "b/\x00"), None),
    )  # fmt: skip
    folder = Finding(
        "hf.remote-code", Severity.SUSPICIOUS, "names remote code", Location("t/modeling_x.py"), "modeling_x"
    )
    return [
        (3, FileReport("t/a.pkl", "pickle", Verdict.MALICIOUS, (evil, odd), 10, 0.25)),
        (7, Skipped("t/notes.txt", SKIPPED_UNKNOWN)),
        (9, FileReport("t/s/model.bin", None, Verdict.CLEAN, (), 20, 0.0, "/t/blobs/ab12")),
        (11, FileReport("t/modeling_x.py", "hf-folder", Verdict.SUSPICIOUS, (folder,), 30, 1.5)),
    ]


def test_a_valid_answer_round_trips_exactly() -> None:
    assert unpack(pack(_good()), _tasks(), DEFAULT_LIMITS) == _good()
    assert unpack(pack([]), [], DEFAULT_LIMITS) == []


def _replace(index: int, result: FileReport | Skipped) -> bytes:
    good = _good()
    good[index] = (good[index][0], result)
    return pack(good)


def _edit(fmt: str, at: int, *values: object) -> bytes:
    data = bytearray(pack(_good()))
    struct.pack_into(fmt, data, at, *values)
    return bytes(data)


_HEAD = records._HEAD.size
_REC = records._RECORD.size
_FINDINGS_AT = _HEAD + 4 * _REC  # the first finding


def _mutations() -> list[tuple[str, bytes]]:
    good = pack(_good())
    report = _good()[0][1]
    assert isinstance(report, FileReport)
    return [
        ("a pickle", pickle.dumps(_good())),
        ("empty", b""),
        ("truncated", good[:-1]),
        ("longer", good + b"\x00"),
        ("other magic", b"XXXX" + good[4:]),
        ("fewer records", pack(_good()[:3])),
        ("a foreign file", pack([*_good()[:3], (12, _good()[3][1])])),
        ("one file twice", pack([*_good()[:3], _good()[0]])),
        ("a string out of range", _edit("<I", _HEAD + 5, 999)),  # the first record's format
        ("a blob not given", _replace(0, FileReport("t/a.pkl", None, Verdict.CLEAN, (), 10, 0.1, "/etc/passwd"))),
        ("an unknown kind", _edit("<B", _HEAD + 4, 7)),
        ("NaN seconds", _edit("<d", _HEAD + 9, float("nan"))),
        ("negative seconds", _edit("<d", _HEAD + 9, -1.0)),
        ("more findings than sent", _edit("<I", _HEAD + 25, 3)),
        ("fewer findings than sent", _edit("<I", _HEAD + 25, 1)),
        ("an unknown severity", _edit("<B", _FINDINGS_AT + 4, 200)),
        ("no rule", _edit("<I", _FINDINGS_AT, 0)),
        ("a count of zero", _edit("<I", _FINDINGS_AT + struct.calcsize("<IBIIqII"), 0)),
        ("an offset below -1", _edit("<q", _FINDINGS_AT + 13, -2)),
        ("members out of range", _edit("<I", _FINDINGS_AT + 9, 1000)),
        ("skipped with another reason", _replace(1, Skipped("t/notes.txt", "some other reason"))),
        ("a model file skipped", _replace(2, Skipped("t/s/model.bin", SKIPPED_UNKNOWN))),
        ("the folder finding dropped", _replace(3, FileReport("t/modeling_x.py", "hf-folder", Verdict.CLEAN, (), 30, 1.5))),
        ("too many findings", _replace(0, FileReport("t/a.pkl", "pickle", Verdict.MALICIOUS, report.findings * DEFAULT_LIMITS.max_findings_per_file, 10, 0.1))),
        ("not UTF-8", good.replace(b"pickle.dangerous-call", b"pickle.dangerous-\xff\xfe\xfd\xfc")),
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "answer"), _mutations(), ids=[n for n, _ in _mutations()])
def test_an_answer_that_does_not_fit_is_refused(name: str, answer: bytes) -> None:
    with pytest.raises(BadResult):
        unpack(answer, _tasks(), DEFAULT_LIMITS)


def test_the_verdict_is_derived_here() -> None:
    """A worker may drop findings (it can lie about its own files), never make a verdict up: none
    is sent, and one below the folder findings this process knows is refused."""
    data = _replace(0, FileReport("t/a.pkl", "pickle", Verdict.MALICIOUS, (), 10, 0.1))
    assert unpack(data, _tasks(), DEFAULT_LIMITS)[0][1].verdict is Verdict.CLEAN  # type: ignore[union-attr]
    assert b"MALICIOUS" not in pack(_good())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_bytes_are_an_answer_or_bad_result(data: st.DataObject) -> None:
    """Random damage to a valid answer: a result for each file, or BadResult; nothing else raised
    (and nothing allocated past the answer: every count is checked against its length first)."""
    raw = bytearray(pack(_good()))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    try:
        out = unpack(bytes(raw), _tasks(), DEFAULT_LIMITS)
    except BadResult:
        return
    assert sorted(p for p, _ in out) == [3, 7, 9, 11]


# -- a worker that writes what it likes ---------------------------------------------------------


def _malicious_pickle(tmp_path: Path) -> tuple[bytes, Path]:
    """A pickle whose loading touches a marker; proven with the real pickle.loads, in a throwaway
    process."""
    marker = tmp_path / "pwned"
    attack = next(a for a in ATTACKS if a.id == "os-system")
    (tmp_path / "fixture").mkdir()
    payload = attack.build(tmp_path / "fixture", marker).read_bytes()
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=payload,
        check=False,
        timeout=60,
    )
    assert marker.exists()  # the payload does run under pickle.loads
    marker.unlink()
    return payload, marker


def _answer_with(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> None:
    """Every forked worker writes ``payload`` into its results file as its answer for each batch
    it scanned (a worker that a file took over could write anything there)."""
    real = pool._write_all

    def write(fd: int, frame: bytes) -> None:
        number, _ = pool._FRAME.unpack_from(frame)
        real(fd, pool._FRAME.pack(number, len(payload)) + payload)

    monkeypatch.setattr(pool, "_write_all", write)


def _tree(root: Path, count: int) -> list[Task]:
    root.mkdir()
    for i in range(count):
        (root / f"p{i:04d}.pkl").write_bytes(pickle.dumps({"i": i}))
    return [
        Task(i, p, str(p), p.stat().st_size, None, None, (), ())
        for i, p in enumerate(sorted(root.glob("*.pkl")))
    ]


def test_a_malicious_pickle_from_a_worker_runs_nothing_here_and_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload, marker = _malicious_pickle(tmp_path)
    _answer_with(monkeypatch, payload)
    tasks = _tree(tmp_path / "t", 200)
    out = dict(
        pool.run(
            tasks, 2, base=tmp_path / "t", limits=DEFAULT_LIMITS, policy=airlock.Policy(), verified=None,
            folder_format=None, advance=lambda n, c: None, parent_scans=False,
        )
    )  # fmt: skip
    assert not marker.exists()
    assert sorted(out) == [t.position for t in tasks]
    for result in out.values():
        assert isinstance(result, FileReport) and result.verdict is Verdict.ERROR
        assert [f.rule for f in result.findings] == ["scan.bad-result"]


def test_through_the_public_scan_the_workers_batches_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent scans batches too: those are judged as usual; each one a worker answered for is
    an ERROR, so the report is never clean."""
    payload, marker = _malicious_pickle(tmp_path)
    _answer_with(monkeypatch, payload)
    _tree(tmp_path / "t", 640)  # ten batches (22 once the last ones are cut)
    parent, real = os.getpid(), pool._one

    def slow_in_the_parent(task: Task, shared: pool._Shared) -> FileReport | Skipped:
        if os.getpid() == parent:  # so that the worker surely takes batches, even on a busy machine
            time.sleep(0.002)
        return real(task, shared)

    monkeypatch.setattr(pool, "_one", slow_in_the_parent)
    report = airlock.scan(tmp_path / "t", jobs=2)
    assert not marker.exists()
    assert len(report.files) == 640
    verdicts = {f.verdict for f in report.files}
    assert verdicts <= {Verdict.CLEAN, Verdict.ERROR} and Verdict.ERROR in verdicts
    assert report.verdict is Verdict.ERROR and report.exit_code == 2
    bad = [f for f in report.files if f.verdict is Verdict.ERROR]
    assert all([x.rule for x in f.findings] == ["scan.bad-result"] for f in bad)
