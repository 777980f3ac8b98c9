"""Review 4: a forked scan worker that a hostile file took over writes what it likes into the
channels it shares with the parent (its results file, the progress pipe). The parent must end
with a report (ERRORs where it cannot believe an answer), never a traceback, an endless loop or
unbounded memory."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import airlock
from airlock._scan import pool
from airlock._scan.pool import Task


def _tree(root: Path, count: int) -> Path:
    root.mkdir()
    for i in range(count):
        (root / f"p{i:04d}.pkl").write_bytes(pickle.dumps({"i": i}))
    return root


@pytest.mark.parametrize("note", [pool._NUMBER.pack(10**6), b"\x01\x02\x03"], ids=["unknown-batch", "torn"])
def test_review4_a_bogus_progress_note_does_not_crash_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, note: bytes
) -> None:
    """Sent: a worker writes a batch number that does not exist (1,000,000) or three bytes to the
    progress pipe (its inherited ``done`` descriptor), then scans as usual. Happened: the parent's
    ``_advance_done`` indexes ``work[number]`` / ``iter_unpack``s the bytes and ``airlock.scan``
    raises IndexError / struct.error (a traceback from the CLI, no report). Should: the progress
    note is only a display hint; the scan ends with its report (200 files)."""
    real = pool._worker

    def evil(work, shared, todo, done, out, parent):  # type: ignore[no-untyped-def]
        os.write(done, note)
        real(work, shared, todo, done, out, parent)

    monkeypatch.setattr(pool, "_worker", evil)
    report = airlock.scan(_tree(tmp_path / "t", 200), jobs=2)
    assert len(report.files) == 200


def test_review4_a_shrinking_results_file_does_not_crash_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent: a worker takes no batch and, for up to 10 s, truncates its results file to 12,000
    bytes and back to 0 in a loop. Happened: the parent's ``_Answers.take`` sees a size with
    ``fstat``, then ``pread`` returns fewer than 12 bytes and ``_FRAME.unpack`` raises
    ``struct.error: unpack requires a buffer of 12 bytes`` out of ``airlock.scan``. Should: a short
    read is 'not complete yet' (or an ERROR for that worker's batches); the scan ends with its
    report of every file."""
    stop = tmp_path / "stop"

    def evil(work, shared, todo, done, out, parent):  # type: ignore[no-untyped-def]
        end = time.monotonic() + 10
        while time.monotonic() < end and not stop.exists():
            os.ftruncate(out, 12_000)
            os.ftruncate(out, 0)
        os._exit(0)

    monkeypatch.setattr(pool, "_worker", evil)
    try:
        report = airlock.scan(_tree(tmp_path / "t", 1500), jobs=2)
    finally:
        stop.touch()
    assert len(report.files) == 1500


_ZEROS = """
import os, pickle, resource, sys, time
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import airlock
from airlock._scan import pool
from airlock._scan.pool import Task
root = Path(sys.argv[1])
real = pool._worker
def evil(work, shared, todo, done, out, parent):
    os.ftruncate(out, 12 * 10**9)  # sparse: 10**9 frames (batch 0, 0 bytes), costs the worker nothing
    os._exit(0)
pool._worker = evil
report = airlock.scan(root, jobs=2)
print("files", len(report.files), report.verdict.value)
"""


def test_review4_a_flood_of_empty_frames_is_bounded(tmp_path: Path) -> None:
    """Sent: a worker (given a batch) ``ftruncate``s its results file to 12 GB of zeros (sparse:
    no memory, no time for the worker): 10**9 frames 'batch 0, 0 bytes'. Happened: the parent's
    ``_Answers.take`` loops over every frame, builds an ERROR batch for each and keeps them all
    in a list (a 36 MB file already ran > 120 s; here it runs out of time/3 GiB of address space).
    Should: after a frame it does not believe (or a second answer for one batch) the parent stops
    reading that worker's file, and the scan ends within seconds with ERRORs for its batches."""
    root = _tree(tmp_path / "t", 200)
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_ZEROS), str(root)],
            capture_output=True, text=True, timeout=40, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the parent looped for 40 s over a worker's empty frames")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "files 200 ERROR" in done.stdout


_SPARSE_FRAME = """
import os, resource, sys
from pathlib import Path
import airlock
from airlock._scan import pool, records
from airlock.limits import DEFAULT_LIMITS
def evil(work, shared, todo, done, out, parent):
    number = pool._take(todo, len(work))
    length = records.answer_bytes(DEFAULT_LIMITS, len(work[number])) - 1
    os.write(out, pool._FRAME.pack(number, length))
    os.ftruncate(out, pool._FRAME.size + length)  # sparse: costs the worker nothing
    os._exit(0)
pool._worker = evil
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = airlock.scan(Path(sys.argv[1]), jobs=2)
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) >> 10
print("files", len(report.files), report.verdict.value, "grew", grew)
"""


def test_review4_one_frame_of_zeros_does_not_cost_the_parent_half_a_gigabyte(tmp_path: Path) -> None:
    """Sent: a worker takes a batch (64 tiny pickles), writes a frame header for it whose length
    is ``answer_bytes(limits, 64) - 1`` (~530 MB: 8.4 MB per file, from 505 findings x 16 KiB) and
    ``ftruncate``s its results file to that length (sparse, free for the worker). Happened: the
    parent ``pread``s the whole frame into one bytes object before looking at its first byte: its
    peak RSS grows by ~505 MiB (measured), and by ~16 GB for the ~1,950-file batches of a
    1,000,000-file tree (a MemoryError traceback under a memory limit). Should: the parent checks
    the header of an answer before reading the rest, or reads it in bounded pieces, so that a
    worker's lie costs it no more than a real answer could (here: < 128 MiB of growth); the
    batch's files are ERRORs either way."""
    root = _tree(tmp_path / "t", 200)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SPARSE_FRAME), str(root)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    files, count, verdict, _, grew = done.stdout.split()
    assert (files, count, verdict) == ("files", "200", "ERROR")
    assert int(grew) < 128, f"the parent's peak memory grew by {grew} MiB"


def test_review4_a_misaligned_hand_out_pipe_does_not_crash_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent: a worker reads one byte from the batch hand-out pipe (its inherited ``todo``
    descriptor) and exits. Happened: every number the parent then reads straddles two numbers
    (e.g. 0x01000000); ``_run_batches`` indexes ``work[number]`` and ``airlock.scan`` raises
    IndexError (a torn last read would be an AssertionError). Should: a number that names no
    batch (or a short read) ends the hand-out for the parent; the batches not answered are
    rescued or ERRORs, and the scan ends with a report of every file."""
    parent, real = os.getpid(), pool._one

    def slow_in_the_parent(task: Task, shared: pool._Shared) -> object:
        if os.getpid() == parent:  # the worker surely reads its byte before the parent is done
            time.sleep(0.002)
        return real(task, shared)

    def evil(work, shared, todo, done, out, parent):  # type: ignore[no-untyped-def]
        if todo < 0:  # a rescue worker (one file, no pipe): honest
            real_worker(work, shared, todo, done, out, parent)
        os.read(todo, 1)
        os._exit(0)

    real_worker = pool._worker
    monkeypatch.setattr(pool, "_one", slow_in_the_parent)
    monkeypatch.setattr(pool, "_worker", evil)
    report = airlock.scan(_tree(tmp_path / "t", 1500), jobs=2)
    assert len(report.files) == 1500


def test_a_worker_holds_no_other_workers_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 4 (design note): a worker forked after another inherited that worker's results file
    and could rewrite its answers (a MALICIOUS one to CLEAN) without a second answer showing. Each
    worker now closes the others' before it scans: here each lists the memfds it holds."""
    seen = tmp_path / "seen"
    seen.mkdir()
    real = pool._worker

    def listing(work, shared, todo, done, out, parent):  # type: ignore[no-untyped-def]
        held = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:airlock-scan"):
                    held.append(int(fd))
        (seen / str(os.getpid())).write_text(" ".join(map(str, sorted(held))))
        real(work, shared, todo, done, out, parent)

    monkeypatch.setattr(pool, "_worker", listing)
    report = airlock.scan(_tree(tmp_path / "t", 600), jobs=3)
    assert len(report.files) == 600
    lists = [path.read_text().split() for path in seen.iterdir()]
    assert len(lists) == 2  # two workers beside the parent
    assert all(len(held) == 1 for held in lists), lists  # its own results file, and no other
