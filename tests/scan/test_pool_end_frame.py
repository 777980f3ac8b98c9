"""Round 5 of the pool (docs/scale.md): a worker ends its results file with an end frame, and the
parent waits for that frame, not for the worker's exit (an exit tears down the worker's copy of the
address space: the report need not wait for it). A worker that has written its end frame is killed
and reaped, as the scan ends or, on the command line, once the report is written; it is never
left running, and an end frame written early (before the worker's answers) never shortens the
report: the batches it did not answer are scanned again."""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import airlock
from airlock._cli import main
from airlock._scan import pool, records
from airlock._scan.pool import Task
from airlock.limits import DEFAULT_LIMITS
from airlock.results import FileReport, Verdict

#: how long a lingering worker stays after its end frame: far longer than any bound below
LINGER = 60.0


def _tree(root: Path, count: int) -> Path:
    """Pickles; p0007 calls os.system (written with the opcodes, never loaded here)."""
    root.mkdir()
    for i in range(count):
        (root / f"p{i:04d}.pkl").write_bytes(pickle.dumps({"i": i, "s": "x" * (i % 50)}))
    (root / "p0007.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    return root


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer exists (killed and reaped: not even a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _state(pid: int) -> str:
    """The process state letter of ``pid`` (``Z``: exited, not yet reaped), or ``gone``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def _lingering(pids: Path) -> Callable[..., None]:
    """A worker that scans as the real one does and then, its end frame written, stays for
    :data:`LINGER` seconds before it exits (its pid noted in the folder ``pids``). Rescue workers
    (``todo`` -1) are the real ones."""
    real = pool._worker

    def worker(work: Any, shared: Any, todo: int, done: int, out: int, parent: int) -> None:
        if todo >= 0:
            (pids / str(os.getpid())).touch()
            leave = os._exit

            def slowly(code: int) -> None:
                time.sleep(LINGER)
                leave(code)

            os._exit = slowly  # type: ignore[assignment]  # this process only (a fork)
        real(work, shared, todo, done, out, parent)

    return worker


def test_an_honest_worker_ends_its_results_file_with_an_end_frame(tmp_path: Path) -> None:
    """The real worker, run on two batches in a fork of this process: its file holds their
    answers, then the end frame (number 0xFFFFFFFF, length 0); the parent's reader takes both
    answers and says the worker ended. A frame after the end frame is never read."""
    root = _tree(tmp_path / "t", 3)
    tasks = [
        Task(i, p, str(p), p.stat().st_size, None, None, (), ()) for i, p in enumerate(sorted(root.iterdir()))
    ]
    work = [tasks[:2], tasks[2:]]
    shared = pool._Shared(root, DEFAULT_LIMITS, airlock.Policy(), None, None)
    out = pool._results_file()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            pool._worker(work, shared, -1, -1, out, os.getppid())
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        data = os.pread(out, os.fstat(out).st_size, 0)
        assert data.endswith(pool._FRAME.pack(0xFFFFFFFF, 0))
        extra = records.pack([(2, FileReport(str(tasks[2].path), "pickle", Verdict.CLEAN, (), 1, 0.1))])
        os.write(out, pool._FRAME.pack(1, len(extra)) + extra)  # after the end: a second answer, unread
        answers = pool._Answers(out, work, DEFAULT_LIMITS)
        taken = answers.take()
        assert [number for number, _ in taken] == [0, 1]
        assert answers.ended and answers.take() == []
        verdicts = {position: result.verdict for _, found in taken for position, result in found}  # type: ignore[union-attr]
        assert verdicts == {
            0: Verdict.CLEAN,
            1: Verdict.CLEAN,
            2: Verdict.CLEAN,
            3: Verdict.MALICIOUS,
        }  # p0007
    finally:
        os.close(out)


@pytest.mark.parametrize(
    ("number", "length", "ended"),
    [(0xFFFFFFFF, 0, True), (0xFFFFFFFF, 1, False), (0xFFFFFFFE, 0, False), (3, 0, False)],
    ids=["end", "end-with-a-length", "near-miss-number", "no-such-batch"],
)
def test_only_the_exact_end_frame_ends_a_worker(
    tmp_path: Path, number: int, length: int, ended: bool
) -> None:
    """A frame that names no batch stops the reading either way; only number 0xFFFFFFFF with
    length 0 says the worker has ended (else the parent waits for its exit, as for a worker that
    died)."""
    work = [[Task(0, Path("f0"), "f0", 1, None, None, (), ())]]
    fd = os.open(tmp_path / "frames", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, pool._FRAME.pack(number, length) + b"x" * length)
        answers = pool._Answers(fd, work, DEFAULT_LIMITS)
        assert answers.take() == []
        assert answers.stopped and answers.ended is ended
    finally:
        os.close(fd)


def test_the_scan_does_not_wait_for_a_worker_that_gave_all_its_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the parent waited for each worker's exit (``waitpid``) before the scan could end; a
    worker that stays after its last answer (here 60 s: a slow exit, or a hostile worker that never
    leaves) held the scan that long. Now the scan ends on the end frame, the worker is killed and
    reaped (not even a zombie is left), and the report is the same as with one process."""
    root = _tree(tmp_path / "t", 400)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setattr(pool, "_worker", _lingering(pids))
    started = time.monotonic()
    report = airlock.scan(root, jobs=3)
    took = time.monotonic() - started
    assert took < LINGER / 3, f"the scan waited {took:.1f} s for its workers to exit"
    workers = [int(p.name) for p in pids.iterdir()]
    assert len(workers) == 2
    assert all(_gone(pid) for pid in workers), "a worker was left running or unreaped"
    alone = airlock.scan(root, jobs=1)
    assert [(f.path, f.verdict) for f in report.files] == [(f.path, f.verdict) for f in alone.files]
    assert report.verdict is Verdict.MALICIOUS and len(report.files) == 400


def test_the_command_line_reaps_its_workers_after_writing_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``airlock scan --jobs 2 -o FILE``: when a worker is reaped the report is already in FILE
    (the exits overlap the report's rendering), and every worker is reaped before the command
    returns (a lingering one killed, not waited for)."""
    root = _tree(tmp_path / "t", 400)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setattr(pool, "_worker", _lingering(pids))
    output = tmp_path / "report.txt"
    seen: list[str] = []
    states: list[str] = []
    real_reap = pool._reap

    def reap(pid: int) -> None:
        seen.append(output.read_text() if output.exists() else "")
        # killed when its end frame was read, before the report was made: by now it has exited
        # (a zombie), it does not linger while the report is written
        deadline = time.monotonic() + 5
        while _state(pid) not in ("Z", "gone") and time.monotonic() < deadline:
            time.sleep(0.01)
        states.append(_state(pid))
        real_reap(pid)

    monkeypatch.setattr(pool, "_reap", reap)
    started = time.monotonic()
    code = main(["scan", "-q", "--jobs", "2", "-o", str(output), str(root)])
    assert time.monotonic() - started < LINGER / 3
    assert code == 1
    assert len(seen) == 1 and "verdict: MALICIOUS" in seen[0]
    assert states == ["Z"]
    (worker,) = [int(p.name) for p in pids.iterdir()]
    assert _gone(worker)


def test_an_end_frame_before_the_answers_never_shortens_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker (taken over) takes two batches, answers none, writes its end frame and stays.
    The parent stops waiting for it and kills it; the two batches it took are scanned again in
    fresh processes: every file is in the report with its real verdict (p0007 MALICIOUS)."""
    root = _tree(tmp_path / "t", 400)
    real = pool._worker

    def early_end(work: Any, shared: Any, todo: int, done: int, out: int, parent: int) -> None:
        if todo < 0:  # a rescue worker: honest
            real(work, shared, todo, done, out, parent)
        pool._take(todo, len(work))
        pool._take(todo, len(work))
        os.write(out, pool._FRAME.pack(0xFFFFFFFF, 0))
        os.write(done, pool._NUMBER.pack(0xFFFFFFFF))
        time.sleep(LINGER)
        os._exit(0)

    monkeypatch.setattr(pool, "_worker", early_end)
    started = time.monotonic()
    report = airlock.scan(root, jobs=2)
    assert time.monotonic() - started < LINGER / 3
    alone = airlock.scan(root, jobs=1)
    assert [(f.path, f.verdict) for f in report.files] == [(f.path, f.verdict) for f in alone.files]
    assert len(report.files) == 400 and report.verdict is Verdict.MALICIOUS


def test_a_worker_that_dies_without_an_end_frame_is_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed in the middle of its batches writes no end frame: the parent finds its
    exit (pidfd, or the 20 ms look) and rescues what it did not answer."""
    root = _tree(tmp_path / "t", 400)
    real = pool._worker

    def killed(work: Any, shared: Any, todo: int, done: int, out: int, parent: int) -> None:
        if todo < 0:
            real(work, shared, todo, done, out, parent)
        pool._take(todo, len(work))
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(pool, "_worker", killed)
    report = airlock.scan(root, jobs=2)
    assert len(report.files) == 400 and report.verdict is Verdict.MALICIOUS
    assert all(f.verdict is not Verdict.ERROR for f in report.files)


def test_scans_of_many_paths_keep_one_scans_workers_unreaped_at_most(tmp_path: Path) -> None:
    """Within ``reap_after`` (``airlock scan PATH PATH ...``) each scan reaps the workers the
    previous one left to reap before it forks its own: a scan of hundreds of paths never holds
    hundreds of exited workers (each a process slot under RLIMIT_NPROC) until the end."""
    roots = [_tree(tmp_path / f"t{i}", 200) for i in range(4)]
    held: list[list[int]] = []
    with pool.reap_after():
        for root in roots:
            airlock.scan(root, jobs=3)
            assert pool._later is not None
            held.append(list(pool._later))
        assert all(len(pids) <= 2 for pids in held), held  # this scan's two workers at most
        assert sum(map(len, held)) >= 4  # the reaping was deferred (a worker per scan at least)
        earlier = [pid for pids in held[:-1] for pid in pids]
        assert all(_gone(pid) for pid in earlier)
    assert pool._later is None
    assert all(_gone(pid) for pids in held for pid in pids)


def _model_tree(root: Path, links: bool) -> Path:
    """A folder whose checks speak (a config naming remote code: ``hf.*`` findings for the config
    and the code file), 300 pickles over two folders (one calling os.system) and, with ``links``,
    a link inside the tree (an alias) and one leaving it."""
    tree = _tree(root, 150)
    (tree / "sub").mkdir()
    for i in range(150):
        (tree / "sub" / f"q{i:04d}.pkl").write_bytes(pickle.dumps([i, "y" * (i % 30)]))
    (tree / "config.json").write_text(
        '{"model_type": "tiny", "auto_map": {"AutoModel": "modeling_tiny.TinyModel"}}'
    )
    (tree / "modeling_tiny.py").write_text("import os\n\nclass TinyModel:\n    pass\n")
    if links:
        (tree / "pytorch_model.bin").symlink_to("p0001.pkl")
        (tree / "away.pkl").symlink_to(root.parent)
    return tree


def _cache_repo(hub: Path) -> Path:
    """``acme/tiny`` as the Hugging Face hub leaves it: blobs named by hash, snapshot links."""
    import hashlib

    repo = hub / "models--acme--tiny"
    commit = "0" * 40
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    files = {f"w{i:03d}.bin": pickle.dumps({"w": [i] * 5}, protocol=2) for i in range(300)}
    files["config.json"] = b'{"model_type": "tiny"}'
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        (snapshot / name).symlink_to(f"../../blobs/{digest}")
    return repo


def _without_timings(text: str) -> object:
    import json

    doc = json.loads(text)

    def strip(node: object) -> object:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ("seconds", "duration_seconds")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(doc)


def test_command_line_reports_are_the_same_for_any_jobs_with_folder_checks_links_and_a_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``airlock scan`` of a tree whose folder checks speak, with links inside and out, and of a
    Hugging Face cache repository (two PATHs: the second scan reaps the first one's workers), then
    such a tree (without links) verified against a lock file: the text and JSON reports (apart from
    timings) are the same with ``--jobs 1`` and ``--jobs 2``."""
    (tmp_path / "models").mkdir()
    tree = _model_tree(tmp_path / "models" / "t", links=True)
    locked = _model_tree(tmp_path / "models" / "l", links=False)  # a lock file lists no links
    repo = _cache_repo(tmp_path / "hub")
    assert main(["hash", str(locked), "--format", "lock"]) == 0
    lock = tmp_path / "model.lock"
    lock.write_text(capsys.readouterr().out)
    runs: dict[str, list[tuple[int, str]]] = {}
    for jobs in ("1", "2"):
        for args in (
            ["-q", str(tree), str(repo)],
            ["-q", "--format", "json", str(tree), str(repo)],
            ["-q", "--lock", str(lock), str(locked)],
            ["-q", "--lock", str(lock), "--format", "json", str(locked)],
        ):
            code = main(["scan", "--jobs", jobs, *args])
            runs.setdefault(jobs, []).append((code, capsys.readouterr().out))
    for (code1, out1), (code2, out2) in zip(runs["1"], runs["2"], strict=True):
        assert code1 == code2 == 1  # p0007 calls os.system
        if out1.startswith("{"):
            assert _without_timings(out1) == _without_timings(out2)
        else:
            assert out1 == out2
    text = runs["1"][0][1]
    assert "hf." in text and "fs.symlink-outside" in text and "MALICIOUS" in text
    assert "integrity:" in runs["1"][2][1]
