"""Outside review 15 of ``airlock scan --ray``: a taken-over Ray worker (one that parsed hostile
bytes) against the client that builds the report.

A worker's answer reaches the client through Ray's object store, and ``ray.get`` unpickles
whatever the worker stored: a worker that stores a pickle instead of the JSON record's bytes (or
raises an exception whose pickle does something) ran code in the trusted client. The client now
reads the stored bytes and their type tag itself and believes only raw bytes.

The hostile worker is the real scan task replaced in the client (a closure, so Ray ships it by
value to the real workers of a real local cluster with token authentication on); its payload
only writes a marker file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock import __version__
from airlock._formats.base import Issue
from airlock._scan.cluster import MAX_ATTEMPTS, PROTOCOL, _Job, _requeue, batch_seconds, decode
from airlock._scan.pool import Task
from airlock.limits import DEFAULT_LIMITS
from airlock.results import FileReport, Severity, Skipped, Verdict
from tests._ray_cluster import Cluster, running_cluster

ray_group = pytest.mark.xdist_group("ray")

# the client with the scan task replaced by a hostile one (argv: marker, how, then airlock's argv)
HOSTILE_CLIENT = r"""
import sys

import airlock._scan.cluster as cluster
from airlock._cli import main


def hostile(marker, how):
    code = f"import sys; open({marker!r}, 'w').write(repr(sys.argv))"  # which process ran it

    class Payload:  # unpickling it runs exec(code)
        def __reduce__(self):
            return (exec, (code,))

    class PayloadError(Exception):
        def __reduce__(self):
            return (exec, (code,))

    def scan_batch(shared, batch):
        if how == "hang":  # a worker that never answers for a batch holding hang.pkl
            if any(task.path.name == "hang.pkl" for task in batch):
                import time

                time.sleep(3600)
            return real(shared, batch)
        if how == "error":
            raise PayloadError("hostile")
        if how == "object":
            return Payload()
        return b"x" * (64 * 1024 * 1024)  # "huge": far more than an answer may be

    return scan_batch


real = cluster.scan_batch
cluster.scan_batch = hostile(sys.argv[1], sys.argv[2])
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as started:
        yield started


@ray_group
@pytest.mark.slow
@pytest.mark.parametrize("how", ["object", "error", "huge"])
def test_a_hostile_worker_answer_runs_no_code_in_the_client(
    cluster: Cluster, tmp_path: Path, how: str
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for i in range(3):
        (folder / f"m{i}.pkl").write_bytes(b"\x80\x02K\x01.")  # the int 1: CLEAN locally
    marker = tmp_path / "marker"
    proc = subprocess.run(
        [sys.executable, "-c", HOSTILE_CLIENT, str(marker), how, "scan", "--format", "json", "--ray", cluster.address,
         str(folder)],
        check=False, cwd=tmp_path, env=cluster.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert not marker.exists(), f"a worker's answer ran code in {marker.read_text()}"
    assert proc.stdout, proc.stderr
    files = json.loads(proc.stdout)["files"]
    assert sorted(f["path"] for f in files) == [str(folder / f"m{i}.pkl") for i in range(3)]
    for f in files:  # never clean: the answer could not be believed
        assert f["verdict"] == "ERROR", f
        assert [x["rule"] for x in f["findings"]] == ["cluster.bad-result"], f
    assert proc.returncode == 2, proc.stderr


@ray_group
@pytest.mark.slow
def test_a_worker_that_never_answers_is_cancelled_and_its_file_is_an_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A batch has a deadline from max_seconds_per_file (batch_seconds): a worker that hangs is
    killed and its batch re-queued, then file by file; the file it hangs on is an ERROR after
    MAX_ATTEMPTS, the others are scanned. Before, the client waited for 64 x max_seconds_per_file
    + 300 s (2.2 h by default) and then wrote no report at all."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("hang.pkl", "ok0.pkl", "ok1.pkl"):
        (folder / name).write_bytes(b"\x80\x02K\x01.")
    limit = 0.2
    expected = 2 * batch_seconds(3, DEFAULT_LIMITS.replace(max_seconds_per_file=limit)) + batch_seconds(
        1, DEFAULT_LIMITS.replace(max_seconds_per_file=limit)
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", HOSTILE_CLIENT, str(tmp_path / "marker"), "hang", "scan", "--format", "json",
         "--max-seconds-per-file", str(limit), "--ray", cluster.address, str(folder)],
        check=False, cwd=tmp_path, env=cluster.env(), capture_output=True, text=True, timeout=expected + 120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.stdout, proc.stderr
    files = {Path(f["path"]).name: f for f in json.loads(proc.stdout)["files"]}
    assert {name: f["verdict"] for name, f in files.items()} == {
        "hang.pkl": "ERROR",
        "ok0.pkl": "CLEAN",
        "ok1.pkl": "CLEAN",
    }
    assert [x["rule"] for x in files["hang.pkl"]["findings"]] == ["cluster.worker-died"]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("re-queued") == 2, proc.stderr
    assert elapsed >= expected - 5  # the deadlines were waited for, not cut short


def _record(p: int, path: str, size: int, findings: list[Any]) -> dict[str, object]:
    return {"p": p, "path": path, "format": None if not size else "pickle", "size": size, "seconds": 0.01,
            "blob": None, "findings": findings}  # fmt: skip


@pytest.mark.parametrize("rule", ["file.unreadable", "integrity.changed"])
def test_a_file_the_worker_cannot_open_is_that_files_error_alone(rule: str) -> None:
    """A node that lacks the mount (or reads another version of a file) answers what the local
    scan answers for a file it cannot open: that file an ERROR of size 0, under its own rule; the
    rest of the batch is believed. Before, the size check made every file of the batch
    cluster.bad-result ("is about 0 bytes")."""
    batch = [
        Task(i, Path(f"/m/{n}"), n, 100 + i, None, None, (), ()) for i, n in enumerate(["a.pkl", "gone.pkl"])
    ]
    unread: list[object] = [rule, "ERROR", "cannot open: No such file or directory", [], None, None, None, 1]
    answer = json.dumps({"protocol": PROTOCOL, "airlock": __version__, "results": [
        _record(0, "a.pkl", 100, []), _record(1, "gone.pkl", 0, [unread]),
    ]}).encode()  # fmt: skip
    results = dict(decode(answer, batch, DEFAULT_LIMITS))
    a, gone = results[0], results[1]
    assert isinstance(a, FileReport) and isinstance(gone, FileReport)
    assert (a.verdict, a.size, a.findings) == (Verdict.CLEAN, 100, ())
    assert (gone.verdict, gone.size, [f.rule for f in gone.findings]) == (Verdict.ERROR, 0, [rule])


@pytest.mark.parametrize(
    ("size", "severity", "rule"),
    [(0, "SUSPICIOUS", "file.unreadable"), (0, "ERROR", "file.unreadablex"), (1, "ERROR", "file.unreadable"),
     (0, "INFO", "file.unreadable")],
)  # fmt: skip
def test_only_an_unopened_file_error_of_size_0_excuses_the_size(size: int, severity: str, rule: str) -> None:
    task = Task(0, Path("/m/model.pkl"), "model.pkl", 1000, None, None, (), ())
    finding: list[object] = [rule, severity, "cannot open", [], None, None, None, 1]
    answer = json.dumps(
        {"protocol": PROTOCOL, "airlock": __version__, "results": [_record(0, "model.pkl", size, [finding])]}
    ).encode()
    [(_, result)] = decode(answer, [task], DEFAULT_LIMITS)
    assert isinstance(result, FileReport)
    assert [f.rule for f in result.findings] == ["cluster.bad-result"]


def test_an_unopened_file_record_still_needs_its_folder_findings() -> None:
    """The folder finding the client knows stays in the report of an answer it refuses."""
    issue = Issue("hf.remote-code", Severity.MALICIOUS, "auto_map names remote code", callable="x.Y")
    task = Task(0, Path("/m/config.json"), "config.json", 100, None, None, (issue,), ())
    unread: list[object] = ["file.unreadable", "ERROR", "cannot open", [], None, None, None, 1]
    answer = json.dumps(
        {"protocol": PROTOCOL, "airlock": __version__, "results": [_record(0, "config.json", 0, [unread])]}
    ).encode()
    [(_, result)] = decode(answer, [task], DEFAULT_LIMITS)
    assert isinstance(result, FileReport)
    assert [f.rule for f in result.findings] == ["hf.remote-code", "cluster.bad-result"]


_REMOTE_CODE = Issue("hf.remote-code", Severity.MALICIOUS, "auto_map names remote code", callable="x.Y")


@pytest.mark.parametrize(
    "answer",
    [b"not json", b"", json.dumps({"protocol": PROTOCOL, "airlock": __version__, "results": []}).encode()],
)
def test_a_refused_answer_keeps_the_clients_folder_findings(answer: bytes) -> None:
    """A worker cannot make a file the client itself knows to be MALICIOUS (a folder check) milder
    by answering garbage: the refused answer's ERROR comes with the folder findings, as in a local
    scan with forked workers (bad_batch). Before, the file was a bare ERROR (exit 2, not 1)."""
    task = Task(0, Path("/m/config.json"), "config.json", 100, None, None, (_REMOTE_CODE,), ())
    [(_, result)] = decode(answer, [task], DEFAULT_LIMITS)
    assert isinstance(result, FileReport)
    assert result.verdict is Verdict.MALICIOUS
    assert [f.rule for f in result.findings] == ["hf.remote-code", "cluster.bad-result"]


def test_a_file_whose_worker_keeps_dying_keeps_the_clients_folder_findings() -> None:
    task = Task(0, Path("/m/config.json"), "config.json", 100, None, None, (_REMOTE_CODE,), ())
    results: dict[int, FileReport | Skipped] = {}
    assert (
        _requeue(_Job(0, [task], MAX_ATTEMPTS - 1), "WORKER_DIED", DEFAULT_LIMITS, results, lambda _: None)
        == []
    )
    report = results[0]
    assert isinstance(report, FileReport) and report.verdict is Verdict.MALICIOUS
    assert [f.rule for f in report.findings] == ["hf.remote-code", "cluster.worker-died"]
