"""Scanning in worker processes (airlock._scan.pool): batches, the automatic number of jobs, the same
report for any number of jobs, and a dead worker failing the scan instead of shortening the report."""

from __future__ import annotations

import json
import os
import pickle
import signal
from pathlib import Path
from typing import Any

import pytest

import airlock
from airlock._formats.base import Issue
from airlock._render import render
from airlock._scan import pool
from airlock._scan.pool import (
    AUTO_MIN_BYTES,
    AUTO_MIN_FILES,
    BATCH_BYTES,
    BATCH_FILES,
    Task,
    auto_jobs,
    batches,
)
from airlock.errors import AirlockError
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Severity, Verdict


def _task(index: int, size: int) -> Task:
    return Task(index, Path(f"f{index}"), f"f{index}", size, None, None, (), ())


def _tree(root: Path, count: int) -> None:
    """Pickles, one of them calling os.system (never loaded here: written with the opcodes)."""
    root.mkdir(exist_ok=True)
    for i in range(count):
        (root / f"p{i:04d}.pkl").write_bytes(pickle.dumps({"i": i, "s": "x" * (i % 50)}))
    (root / "p0007.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    (root / "notes.txt").write_text("not a model\n")


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


def test_jobs_none_uses_workers_on_many_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path / "t", AUTO_MIN_FILES)
    seen = tmp_path / "pids"
    real = pool._one

    def recording(task: Task, shared: object) -> object:
        with seen.open("a") as out:  # forked workers inherit this function
            out.write(f"{os.getpid()}\n")
        return real(task, shared)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "available_cpus", lambda: 2)
    monkeypatch.setattr(pool, "_one", recording)
    report = airlock.scan(tmp_path / "t", jobs=None)
    pids = set(seen.read_text().split())
    assert str(os.getpid()) not in pids and len(pids) == 2
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
    out = dict(pool.run(tasks, 2, folder_format=None, advance=lambda n, c: None, **shared))  # type: ignore[arg-type]
    assert sorted(out) == list(range(len(tasks)))
    rules = {tasks[i].display: [f.rule for f in r.findings] for i, r in out.items()}  # type: ignore[union-attr]
    assert rules["p0001.pkl"] == ["test.folder"]
    assert rules["p0000.pkl"] == []


def test_a_dead_worker_fails_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path / "t", 40)
    real = pool._one

    def dies_on_one(task: Task, shared: object) -> object:
        if task.display.endswith("p0011.pkl"):
            os.kill(os.getpid(), signal.SIGKILL)  # in the forked worker: the OOM killer's way out
        return real(task, shared)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "_one", dies_on_one)
    with pytest.raises(AirlockError, match="scan worker process died"):
        airlock.scan(tmp_path / "t", jobs=2)


def test_cli_jobs_default_and_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from airlock._cli import main

    _tree(tmp_path / "t", 5)
    assert main(["scan", "--format", "json", str(tmp_path / "t")]) == 1  # MALICIOUS, default jobs
    assert json.loads(capsys.readouterr().out)["verdict"] == "MALICIOUS"
    assert main(["scan", "--jobs", "0", str(tmp_path / "t")]) == 2
