"""Scanning in worker processes (airlock._scan.pool): batches, the automatic number of jobs, the same
report for any number of jobs, and a dead worker making its files ERRORs, never shortening the report."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import select
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import airlock
from airlock._formats.base import Issue
from airlock._render import render
from airlock._scan import pool, records
from airlock._scan.pool import (
    AUTO_MIN_BYTES,
    AUTO_MIN_FILES,
    BATCH_BYTES,
    BATCH_FILES,
    MAX_BATCHES,
    Task,
    auto_jobs,
    batches,
)
from airlock.limits import DEFAULT_LIMITS
from airlock.results import FileReport, Severity, Skipped, Verdict


def _task(index: int, size: int) -> Task:
    return Task(index, Path(f"f{index}"), f"f{index}", size, None, None, (), ())


def _tree(root: Path, count: int) -> None:
    """Pickles, one of them calling os.system (never loaded here: written with the opcodes)."""
    root.mkdir(exist_ok=True)
    for i in range(count):
        (root / f"p{i:04d}.pkl").write_bytes(pickle.dumps({"i": i, "s": "x" * (i % 50)}))
    (root / "p0007.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    (root / "notes.txt").write_text("not a model\n")


def _run_workers_only(
    root: Path, advance: Callable[[int, int], None]
) -> tuple[list[Task], dict[int, FileReport | Skipped]]:
    """The pickles under ``root`` scanned by two forked workers (the parent scans none)."""
    tasks = [
        Task(i, p, str(p), p.stat().st_size, None, None, (), ())
        for i, p in enumerate(sorted(root.glob("*.pkl")))
    ]
    out = dict(
        pool.run(
            tasks,
            2,
            base=root,
            limits=DEFAULT_LIMITS,
            policy=airlock.Policy(),
            verified=None,
            folder_format=None,
            advance=advance,
            parent_scans=False,
        )
    )
    return tasks, out


def _json(report: airlock.Report) -> dict[str, object]:
    doc: dict[str, Any] = json.loads(render(report, "json"))
    for f in doc["files"]:
        f.pop("seconds", None)  # timings differ from run to run
        f.pop("duration_seconds", None)
    doc.pop("seconds", None)
    doc.pop("duration_seconds", None)
    return doc


# -- batches -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "alone"), [(BATCH_BYTES - 1, False), (BATCH_BYTES, True), (BATCH_BYTES + 1, True)]
)
def test_a_file_of_batch_bytes_or_more_is_a_batch_of_its_own(size: int, alone: bool) -> None:
    out = batches([_task(0, size), _task(1, 1)])
    assert (len(out) == 2) is alone
    assert sorted(t.position for b in out for t in b) == [0, 1]


@pytest.mark.parametrize("count", [BATCH_FILES - 1, BATCH_FILES, BATCH_FILES + 1])
def test_small_files_are_grouped_up_to_batch_files(count: int) -> None:
    out = batches([_task(i, 10) for i in range(count)])
    assert [len(b) for b in out] == ([count] if count <= BATCH_FILES else [BATCH_FILES, count - BATCH_FILES])


def test_the_last_batches_are_smaller() -> None:
    """Of many batches the last four are cut in four (16 files each): the processes finish closer
    together. Every file still once, the largest first."""
    tasks = [_task(i, 10_000 - i) for i in range(2000)]
    out = batches(tasks)
    sizes = [len(b) for b in out]
    assert sizes[:28] == [BATCH_FILES] * 28 and sum(sizes) == 2000  # 31 full batches and one of 16
    assert max(sizes[-16:]) <= BATCH_FILES // 4 and len(sizes) == 32 - 4 + 16
    assert sorted(t.position for b in out for t in b) == list(range(2000))
    assert out[0][0].position == 0
    few = batches(tasks[: BATCH_FILES * 7])  # fewer than 8 batches: as they are
    assert [len(b) for b in few] == [BATCH_FILES] * 7


def test_a_batch_holds_at_most_batch_bytes_and_largest_files_go_first() -> None:
    sizes = [BATCH_BYTES // 2, BATCH_BYTES // 2, 1, BATCH_BYTES // 2 + 1, 7, BATCH_BYTES * 3]
    out = batches([_task(i, s) for i, s in enumerate(sizes)])
    assert all(sum(t.size for t in b) <= BATCH_BYTES or len(b) == 1 for b in out)
    assert out[0] == [_task(5, BATCH_BYTES * 3)]  # the largest file starts first
    assert sorted(t.position for b in out for t in b) == list(range(len(sizes)))  # each file exactly once


# -- the automatic number of jobs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "nbytes", "cpus", "expected"),
    [
        (AUTO_MIN_FILES - 1, 0, 4, 1),
        (AUTO_MIN_FILES, 0, 4, 4),
        (AUTO_MIN_FILES + 1, 0, 4, 4),
        (2, AUTO_MIN_BYTES - 1, 4, 1),
        (2, AUTO_MIN_BYTES, 4, 2),  # never more workers than files
        (1, AUTO_MIN_BYTES * 4, 4, 1),  # one file: nothing to share out
        (AUTO_MIN_FILES, 0, 1, 1),  # one CPU: a pool only costs
        (AUTO_MIN_FILES, 0, 64, 8),  # at most 8
    ],
)
def test_auto_jobs(
    monkeypatch: pytest.MonkeyPatch, files: int, nbytes: int, cpus: int, expected: int
) -> None:
    monkeypatch.setattr(pool, "available_cpus", lambda: cpus)
    assert auto_jobs(files, nbytes) == expected


def test_available_cpus_is_the_affinity_mask() -> None:
    assert pool.available_cpus() == len(os.sched_getaffinity(0))


# -- the same report for any number of jobs ----------------------------------------------------


@pytest.mark.parametrize("jobs", [2, 3, None])
def test_the_report_is_the_same_for_any_number_of_jobs(tmp_path: Path, jobs: int | None) -> None:
    _tree(tmp_path / "t", 150)
    one = airlock.scan(tmp_path / "t", jobs=1)
    many = airlock.scan(tmp_path / "t", jobs=jobs)
    assert one.verdict is Verdict.MALICIOUS
    assert [f.path for f in many.files] == sorted(f.path for f in many.files)
    assert _json(many) == _json(one)
    assert render(many, "text") == render(one, "text")


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    """Every test here ends within a minute: a worker that hangs the parent fails the test."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("a pool test ran for more than 60 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)  # a forked worker does not inherit the alarm
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _slow_parent(real: Any, parent: int, seconds: float) -> Any:
    """``_one`` that takes ``seconds`` longer in the parent, so that the workers surely take batches."""

    def one(task: Task, shared: object) -> object:
        if os.getpid() == parent:
            time.sleep(seconds)
        return real(task, shared)

    return one


def test_jobs_none_uses_workers_on_many_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """jobs=None with 2 CPUs: two processes scan, the parent (which never idles) and one worker."""
    _tree(tmp_path / "t", AUTO_MIN_FILES)
    seen = tmp_path / "pids"
    real = _slow_parent(pool._one, os.getpid(), 0.002)

    def recording(task: Task, shared: object) -> object:
        with seen.open("a") as out:  # forked workers inherit this function
            out.write(f"{os.getpid()}\n")
        return real(task, shared)

    monkeypatch.setattr(pool, "available_cpus", lambda: 2)
    monkeypatch.setattr(pool, "_one", recording)
    report = airlock.scan(tmp_path / "t", jobs=None)
    pids = seen.read_text().split()
    assert str(os.getpid()) in pids and len(set(pids)) == 2
    assert len(pids) == AUTO_MIN_FILES + 1  # each file once (notes.txt too: read, then skipped)
    assert len(report.files) == AUTO_MIN_FILES


def test_folder_findings_travel_with_their_file(tmp_path: Path) -> None:
    """A file's folder issues (here: its own, handed in) reach the worker that scans it."""
    _tree(tmp_path / "t", 3)
    issue = Issue("test.folder", Severity.SUSPICIOUS, "found by a folder check")
    tasks = [
        Task(i, p, p.name, p.stat().st_size, None, None, (issue,) if p.name == "p0001.pkl" else (), ())
        for i, p in enumerate(sorted((tmp_path / "t").glob("*.pkl")))
    ]
    shared = dict(base=tmp_path / "t", limits=DEFAULT_LIMITS, policy=airlock.Policy(), verified=None)
    out = dict(
        pool.run(tasks, 2, folder_format=None, advance=lambda n, c: None, parent_scans=False, **shared)  # type: ignore[arg-type]
    )
    assert sorted(out) == list(range(len(tasks)))
    rules = {tasks[i].display: [f.rule for f in r.findings] for i, r in out.items()}  # type: ignore[union-attr]
    assert rules["p0001.pkl"] == ["test.folder"]
    assert rules["p0000.pkl"] == []


def _dies_in_workers(real: Any, parent: int, name: str | None) -> Any:
    """``_one`` that kills the process scanning ``name`` (any file: None), unless it is the parent:
    the OOM killer's way out, in a forked worker only."""

    def one(task: Task, shared: object) -> object:
        if os.getpid() != parent and (name is None or task.display.endswith(name)):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(task, shared)

    return one


def _by_path(report: airlock.Report) -> dict[str, tuple[str, list[str]]]:
    return {f.path: (f.verdict.value, [x.rule for x in f.findings]) for f in report.files}


def test_a_file_that_kills_its_worker_is_an_error_and_its_batch_mates_are_rescued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All batches go to workers (parent_scans=False); the one with p0011 loses its worker. Its
    files are scanned again, one process each: p0011 kills that one too and is an ERROR
    (scan.worker-died), every other file gets exactly the report a serial scan gives it."""
    _tree(tmp_path / "t", 40)
    serial = airlock.scan(tmp_path / "t", jobs=1)
    monkeypatch.setattr(pool, "_one", _dies_in_workers(pool._one, os.getpid(), "p0011.pkl"))
    monkeypatch.setattr(pool, "BATCH_FILES", 8)  # five batches: the dead one has batch mates
    advanced: list[int] = []
    tasks, out = _run_workers_only(tmp_path / "t", lambda n, c: advanced.append(c))
    assert sorted(out) == list(range(len(tasks)))
    got = {tasks[i].display: r for i, r in out.items()}
    dead = got.pop(str(tmp_path / "t" / "p0011.pkl"))
    assert isinstance(dead, FileReport) and dead.verdict is Verdict.ERROR
    assert [f.rule for f in dead.findings] == ["scan.worker-died"]
    assert "killed by signal 9" in dead.findings[0].message
    want = {f.path: f for f in serial.files}
    for display, report in got.items():
        assert isinstance(report, FileReport)
        assert (report.verdict, report.findings) == (want[display].verdict, want[display].findings)
    assert sum(advanced) == len(tasks)  # every file counted once on the progress display


def test_dead_workers_never_shorten_the_report_or_make_it_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker dies on its first file (and so does every rescue process); the parent scans
    the rest. The report still lists every file, and the files the workers took are ERRORs."""
    _tree(tmp_path / "t", 300)
    serial = _by_path(airlock.scan(tmp_path / "t", jobs=1))
    slow = _slow_parent(pool._one, os.getpid(), 0.002)
    monkeypatch.setattr(pool, "_one", _dies_in_workers(slow, os.getpid(), None))
    monkeypatch.setattr(pool, "BATCH_FILES", 16)  # fewer files to rescue one process each
    report = airlock.scan(tmp_path / "t", jobs=3)
    got = _by_path(report)
    assert sorted(got) == sorted(serial)
    died = [p for p, (_, rules) in got.items() if rules == ["scan.worker-died"]]
    assert died, "no worker took a batch"
    assert all(got[p][0] == "ERROR" for p in died)
    assert {p: v for p, v in got.items() if p not in died} == {p: serial[p] for p in got if p not in died}
    assert report.verdict is Verdict.MALICIOUS  # p0007 (os.system), or ERROR had the workers taken it
    assert report.exit_code != 0


def test_results_file_frames(tmp_path: Path) -> None:
    """A worker's results file: complete frames count; a frame whose records are not its batch's
    files makes each of them an ERROR; a torn last frame (the worker died while writing it) is not
    read (its batch is scanned again)."""
    work = [[_task(0, 1), _task(1, 1)], [_task(2, 1)], [_task(3, 1)]]
    a = FileReport("f0", "pickle", Verdict.CLEAN, (), 1, 0.1)
    b = FileReport("f1", "pickle", Verdict.CLEAN, (), 1, 0.1)
    ok = records.pack([(0, a), (1, b)])
    wrong = records.pack([(7, a)])
    torn = records.pack([(3, FileReport("f3", "pickle", Verdict.CLEAN, (), 1, 0.1))])
    fd = os.open(tmp_path / "frames", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, pool._FRAME.pack(0, len(ok)) + ok)
        os.write(fd, pool._FRAME.pack(1, len(wrong)) + wrong)
        os.write(fd, pool._FRAME.pack(2, len(torn)) + torn[:-1])
        frames = list(pool._read_results(fd, work, DEFAULT_LIMITS))
    finally:
        os.close(fd)
    assert [n for n, _ in frames] == [0, 1]
    assert frames[0][1] == [(0, a), (1, b)]
    ((position, error),) = frames[1][1]
    assert position == 2 and isinstance(error, FileReport) and error.verdict is Verdict.ERROR
    assert [f.rule for f in error.findings] == ["scan.bad-result"]


def test_answers_are_taken_as_they_complete(tmp_path: Path) -> None:
    """The parent reads a live worker's file between its own batches: a frame counts once complete,
    never twice, and nothing after a frame that names no batch counts."""
    work = [[_task(0, 1)], [_task(1, 1)], [_task(2, 1)]]
    reports = [FileReport(f"f{i}", "pickle", Verdict.CLEAN, (), 1, 0.1) for i in range(3)]
    frames = [
        pool._FRAME.pack(i, len(r)) + r
        for i, r in enumerate(records.pack([(i, reports[i])]) for i in range(3))
    ]
    fd = os.open(tmp_path / "frames", os.O_RDWR | os.O_CREAT)
    try:
        answers = pool._Answers(fd, work, DEFAULT_LIMITS)
        assert answers.take() == []
        os.write(fd, frames[0][:5])
        assert answers.take() == []
        os.write(fd, frames[0][5:] + frames[1][:-1])
        assert answers.take() == [(0, [(0, reports[0])])]
        assert answers.take() == []
        os.write(fd, frames[1][-1:])
        assert answers.take() == [(1, [(1, reports[1])])]
        os.write(fd, pool._FRAME.pack(9, 4) + b"xxxx" + frames[2])
        assert answers.take() == [] and answers.take() == []
    finally:
        os.close(fd)


def test_an_answer_longer_than_its_batch_may_take_is_an_error_unread(tmp_path: Path) -> None:
    limits = DEFAULT_LIMITS.replace(max_findings_per_file=1)
    work = [[_task(0, 1)], [_task(1, 1)]]
    bound = records.answer_bytes(limits, 1)
    ok = records.pack([(1, FileReport("f1", "pickle", Verdict.CLEAN, (), 1, 0.1))])
    fd = os.open(tmp_path / "frames", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, pool._FRAME.pack(0, bound + 1) + b"\0" * (bound + 1))
        os.write(fd, pool._FRAME.pack(1, len(ok)) + ok)
        ((first, (error,)),) = pool._read_results(fd, work, limits)
    finally:
        os.close(fd)
    assert first == 0 and isinstance(error[1], FileReport) and error[1].verdict is Verdict.ERROR
    assert [f.rule for f in error[1].findings] == ["scan.bad-result"]
    # review 4: after an answer it does not believe, nothing more of that worker's file is read
    # (an honest worker never writes one); batch 1's files are scanned again by the pool's rescue


def test_a_batch_pipe_holds_every_batch_number() -> None:
    """MAX_BATCHES numbers fit in a pipe before any worker reads one, even a pipe of one page (what
    Linux gives a user over pipe-user-pages-soft): the parent never blocks filling it."""
    assert MAX_BATCHES * pool._NUMBER.size <= select.PIPE_BUF == 4096
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)  # the smallest pipe there is
        os.set_blocking(w, False)
        assert os.write(w, b"\0" * (MAX_BATCHES * pool._NUMBER.size)) == MAX_BATCHES * pool._NUMBER.size
    finally:
        os.close(r)
        os.close(w)
    many = batches([_task(i, BATCH_BYTES) for i in range(MAX_BATCHES + 5)])  # each a batch of its own
    assert len(many) == MAX_BATCHES
    assert sorted(t.position for b in many for t in b) == list(range(MAX_BATCHES + 5))


def test_cli_jobs_default_and_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from airlock._cli import main

    _tree(tmp_path / "t", 5)
    assert main(["scan", "--format", "json", str(tmp_path / "t")]) == 1  # MALICIOUS, default jobs
    assert json.loads(capsys.readouterr().out)["verdict"] == "MALICIOUS"
    assert main(["scan", "--jobs", "0", str(tmp_path / "t")]) == 2


def test_a_worker_that_raises_makes_its_file_an_error_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A bug (an exception, not a kill) in a worker: the file is an ERROR with the exit status, the
    traceback reaches stderr (written to the descriptor: never through a lock the fork copied)."""
    _tree(tmp_path / "t", 6)
    real = pool._one
    parent = os.getpid()

    def raises(task: Task, shared: object) -> object:
        if os.getpid() != parent and task.display.endswith("p0003.pkl"):
            raise RuntimeError("a bug in a reader")
        return real(task, shared)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "_one", raises)
    tasks, out = _run_workers_only(tmp_path / "t", lambda n, c: None)
    got = {tasks[i].display: r for i, r in out.items()}
    bad = got[str(tmp_path / "t" / "p0003.pkl")]
    assert isinstance(bad, FileReport) and bad.verdict is Verdict.ERROR
    assert [f.rule for f in bad.findings] == ["scan.worker-died"]
    assert "exit status 1" in bad.findings[0].message
    assert all(r.verdict is not Verdict.ERROR for d, r in got.items() if d != bad.path)  # type: ignore[union-attr]
    assert "RuntimeError: a bug in a reader" in capfd.readouterr().err


def test_one_batch_is_scanned_without_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten small files with --jobs 4 make one batch: the parent scans it, no process is forked."""
    _tree(tmp_path / "t", 10)
    forks: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", counting_fork)
    report = airlock.scan(tmp_path / "t", jobs=4)
    assert forks == []
    assert len(report.files) == 10 and report.verdict is Verdict.MALICIOUS


_ORPHAN_SCRIPT = """
import os, sys
from airlock._scan import pool, records
pool.BATCH_FILES = 1  # a batch per file: a worker looks for its parent between two files
import airlock
print(os.getpid(), flush=True)
airlock.scan(sys.argv[1], jobs=3)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_workers_stop_soon_after_their_parent_is_killed(tmp_path: Path) -> None:
    """Outside review: workers were not tied to the parent's life — a scan killed by SIGKILL left
    its workers scanning the rest of the tree. Each file here takes ~0.1 s (a 370 KB pickle of
    20,000 dicts); 200 of them leave seconds of work when the parent dies after its workers start."""
    import subprocess
    import sys

    blob = pickle.dumps([{"a": i, "b": str(i)} for i in range(20_000)])
    for index in range(200):
        (tmp_path / f"m{index:03d}.pkl").write_bytes(blob)
    proc = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    children: list[int] = []
    try:
        assert proc.stdout is not None
        parent = int(proc.stdout.readline())
        deadline = time.monotonic() + 60
        while len(children) < 2 and time.monotonic() < deadline:
            tasks = Path(f"/proc/{parent}/task")
            children = [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]
            time.sleep(0.05)
        assert len(children) == 2, children
        time.sleep(0.5)  # the workers are well into their batches
        proc.kill()
        proc.wait(timeout=10)
        killed = time.monotonic()
        while any(_alive(pid) for pid in children) and time.monotonic() - killed < 30:
            time.sleep(0.05)
        lived = time.monotonic() - killed
        # one batch (one file, ~0.1 s; a few on a loaded machine) after the parent's death, not
        # the ~10 s of work left
        assert lived < 3.0, f"workers ran on for {lived:.1f} s after their parent was killed"
    finally:
        proc.kill()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
