"""``airlock scan --ray``: a real local Ray cluster (started here, token authentication on) reads
the files; the report is the local scan's; a worker killed mid-scan re-queues its files.

The cluster is one head node (2 CPUs, a 200 MB object store, no dashboard UI, usage statistics
off) on loopback ports picked here, in its own process group, stopped by that group's id."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock._cli import main
from airlock._formats.base import Issue
from airlock._scan.cluster import MAX_ATTEMPTS, MAX_IN_FLIGHT, _Job, _requeue, decode, encode, in_flight
from airlock._scan.engine import SKIPPED_UNKNOWN
from airlock._scan.pool import Task
from airlock.limits import DEFAULT_LIMITS
from airlock.results import FileReport, Finding, Location, Severity, Skipped, Verdict
from tests._ray_cluster import Cluster, members, running_cluster
from tests.fixtures.attacks import ATTACKS

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")

ray_group = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as started:
        yield started


# -- the tree ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 benign pickles in folders, every attack fixture planted among them, a few files that
    are not models, and one large benign pickle (a batch of its own that takes a while)."""
    root = tmp_path_factory.mktemp("raytree") / "hub"
    marker = root.parent / "marker"  # what a payload would touch if it ever ran
    for i in range(2000):
        folder = root / f"org{i % 10}" / f"model{i % 37}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"w{i:04d}.pkl").write_bytes(
            pickle.dumps({"i": i, "w": [i * 0.5] * (i % 40), "s": "x" * (i % 90)})
        )
    for attack in ATTACKS:
        folder = root / "planted" / attack.id
        folder.mkdir(parents=True)
        attack.build(folder, marker)
    (root / "org1" / "README.md").write_text("not a model\n")
    (root / "org2" / "empty.bin").write_bytes(b"")
    big = list(range(3_000_000))
    (root / "org3" / "big.pkl").write_bytes(pickle.dumps(big, protocol=2))  # ints one opcode each
    _hf_cache(root.parent / "hfcache", marker)
    assert not marker.exists()
    return root


def _hf_cache(hub: Path, marker: Path) -> None:
    """``acme/tiny`` in a Hugging Face cache laid out as hf_hub_download leaves it (blobs named by
    hash, snapshot links to them): remote code a config names, and a pickle renamed to a PyTorch
    name. The folder checks run on the client; the workers read the blobs through the links."""
    repo = hub / "models--acme--tiny"
    commit = "0" * 40
    files: dict[str, bytes] = {
        "config.json": json.dumps(
            {"model_type": "tiny", "auto_map": {"AutoModel": "modeling_tiny.TinyModel"}}
        ).encode(),
        "modeling_tiny.py": f"import os\nos.system('touch {marker}')\n\nclass TinyModel:\n    pass\n".encode(),
        "pytorch_model.bin": pickle.dumps({"w": [0.5] * 10}, protocol=2),
        "weights.bin": next(a for a in ATTACKS if a.id == "os-system").build(hub.parent, marker).read_bytes(),
    }
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        (snapshot / name).symlink_to(f"../../blobs/{digest}")


def _paths(tree: Path) -> list[str]:
    """What each scan here is given: the tree, one folder of it a second time, a cached repo."""
    return [str(tree), str(tree / "planted" / "os-system"), "hf://acme/tiny"]


def _with_cache(env: dict[str, str], tree: Path) -> dict[str, str]:
    return {**env, "HF_HUB_CACHE": str(tree.parent / "hfcache"), "HF_HUB_OFFLINE": "1"}


def _cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airlock", "scan", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _without_timings(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text)
    for f in doc["files"]:
        f.pop("seconds", None)
        f.pop("duration_seconds", None)
    doc.pop("seconds", None)
    doc.pop("duration_seconds", None)
    return doc


@pytest.fixture(scope="module")
def local_report(tree: Path) -> dict[str, Any]:
    env = _with_cache({**os.environ, "PYTHONPATH": str(ROOT / "src")}, tree)
    proc = _cli(env, "--format", "json", "--jobs", "1", *_paths(tree))
    assert proc.returncode == 1, proc.stderr  # MALICIOUS
    return _without_timings(proc.stdout)


# -- on the cluster ------------------------------------------------------------------------------


@ray_group
@pytest.mark.slow
def test_ray_report_equals_the_local_one(cluster: Cluster, tree: Path, local_report: dict[str, Any]) -> None:
    proc = _cli(_with_cache(cluster.env(), tree), "--format", "json", "--ray", cluster.address, *_paths(tree))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""  # nothing from Ray, nothing from the token probes
    report = _without_timings(proc.stdout)
    assert len(report["files"]) >= 2000 + len(ATTACKS)
    malicious = {f["path"] for f in report["files"] if f["verdict"] == "MALICIOUS"}
    assert {a.id for a in ATTACKS if a.runnable} <= {Path(p).parent.name for p in malicious}
    cached = {Path(f["path"]).name: f["verdict"] for f in report["files"] if "/snapshots/" in f["path"]}
    assert cached == {
        "config.json": "SUSPICIOUS", "modeling_tiny.py": "MALICIOUS", "pytorch_model.bin": "CLEAN",
        "weights.bin": "MALICIOUS",
    }  # fmt: skip
    assert report == local_report


@ray_group
@pytest.mark.slow
def test_a_worker_killed_mid_scan_requeues_its_files(
    cluster: Cluster, tree: Path, local_report: dict[str, Any]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airlock", "scan", "--format", "json", "--ray", cluster.address, *_paths(tree)],
        env=_with_cache(cluster.env(), tree), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Kill a worker that has been scanning for 0.3 s on end (big.pkl's batch takes about 1 s on an
    # idle core, a batch of small files far less), so that it dies in a task, not as one ends.
    killed = None
    since: dict[int, float] = {}
    deadline = time.monotonic() + 120
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        now = time.monotonic()
        busy = cluster.worker_pids("ray::scan_batch")
        since = {pid: since.get(pid, now) for pid in busy}
        for pid, start in since.items():
            if now - start >= 0.3:
                killed = pid
                os.kill(pid, signal.SIGKILL)
                break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=240)
    titles = sorted({c.split()[0] for _, c in members(cluster.home) if c})
    assert killed is not None, f"no worker was seen scanning before the scan ended: {err} {titles}"
    assert proc.returncode == 1, err
    assert "re-queued" in err, err
    assert _without_timings(out) == local_report  # every file, the same verdicts


@ray_group
@pytest.mark.slow
def test_a_wrong_token_is_refused(cluster: Cluster, tree: Path) -> None:
    started = time.monotonic()
    proc = _cli(cluster.env(token=secrets.token_hex(32)), "--ray", cluster.address, str(tree / "org1"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        f"airlock scan: error: the Ray cluster at {cluster.address} refused the token from RAY_AUTH_TOKEN"
    )
    assert "InvalidAuthToken" in proc.stderr  # Ray's own line above it says why
    assert time.monotonic() - started < 60  # a probe, not Ray's 20 tries a second apart


@ray_group
@pytest.mark.slow
def test_a_cluster_without_token_authentication_is_refused(tree: Path) -> None:
    """A client with a token is let in by a cluster that checks none: --ray finds out and stops."""
    with running_cluster(auth=False) as open_cluster:
        proc = _cli(open_cluster.env(), "--ray", open_cluster.address, str(tree / "org1"))
    assert proc.returncode == 2
    assert proc.stderr == (
        f"airlock scan: error: the Ray cluster at {open_cluster.address} accepts any token: it runs "
        "without token authentication; start every node with RAY_AUTH_MODE=token and its token "
        "(docs/scale.md)\n"
    )


# -- without a cluster ---------------------------------------------------------------------------


def test_no_token_is_a_usage_error_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(1))
    assert main(["scan", "--ray", "127.0.0.1:1", str(tmp_path / "m.pkl")]) == 2
    assert "needs the cluster's token" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--ray", "auto"], {}, "RAY_ADDRESS, which is not set"),
        (["--ray", "local"], {}, "airlock never starts one"),
        (["--ray", "h:1", "--jobs", "2"], {}, "--jobs and --ray"),
        (["--ray", "h:1", "--expect", "0" * 64], {}, "--ray does not verify"),
        (["--ray", "h:1"], {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "t"}, "always uses Ray token"),
    ],
)
def test_usage_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(1))
    assert main(["scan", *args, str(tmp_path / "m.pkl")]) == 2
    assert message in capsys.readouterr().err


def test_without_the_ray_extra_the_error_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.ecosystem.test_cli_shell import _without

    (tmp_path / "m.pkl").write_bytes(pickle.dumps(1))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    proc = _without(["ray"], ["scan", "--ray", "127.0.0.1:1", "m.pkl"], tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "airlock scan: needs the 'ray' extra, not installed: pip install 'model-airlock[ray]'"
    )


def test_a_plain_scan_never_imports_ray(tmp_path: Path) -> None:
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(1))
    code = "import sys; from airlock._cli import main; main(['scan', '-q', sys.argv[1]]); print('ray' in sys.modules, 'airlock._scan.cluster' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAY_ADDRESS": "127.0.0.1:1"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.pkl")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split()[-2:] == ["False", "False"]


# -- the worker's answer, checked by the client --------------------------------------------------


def _batch() -> list[Task]:
    return [
        Task(3, Path("/t/a.pkl"), "a.pkl", 10, None, None, (), ()),
        Task(7, Path("/t/b.txt"), "b.txt", 5, None, None, (), ()),
    ]


def _good() -> list[tuple[int, FileReport | Skipped]]:
    finding = Finding(
        "pickle.dangerous-global",
        Severity.MALICIOUS,
        "os.system",
        Location("a.pkl", ("data.pkl",), 12),
        "os.system",
        "os.system('x')",
        2,
    )
    return [
        (3, FileReport("a.pkl", "pickle", Verdict.MALICIOUS, (finding,), 10, 0.25)),
        (7, Skipped("b.txt", SKIPPED_UNKNOWN)),
    ]


def test_a_valid_answer_round_trips_exactly() -> None:
    assert decode(encode(_good()), _batch(), DEFAULT_LIMITS) == _good()


def _mutations() -> Iterator[tuple[str, object]]:
    good = json.loads(encode(_good()))

    def variant(change: Any) -> bytes:
        doc = json.loads(encode(_good()))
        change(doc)
        return json.dumps(doc).encode()

    yield "not bytes", good
    yield "not json", b"\x80\x04K\x01."  # a pickle, not JSON
    yield "truncated", encode(_good())[:-5]
    yield "duplicate key", b'{"protocol": 1, "protocol": 1, "airlock": "x", "results": []}'
    yield "other version", variant(lambda d: d.update(airlock="0.0.0"))
    yield "other protocol", variant(lambda d: d.update(protocol=2))
    yield "missing file", variant(lambda d: d["results"].pop())
    yield "file twice", variant(lambda d: d["results"].__setitem__(1, d["results"][0]))
    yield "foreign file", variant(lambda d: d["results"][0].update(p=4))
    yield "renamed file", variant(lambda d: d["results"][0].update(path="other.pkl"))
    yield "extra field", variant(lambda d: d["results"][0].update(verdict="CLEAN"))
    yield "unknown severity", variant(lambda d: d["results"][0]["findings"][0].__setitem__(1, "FINE"))
    yield "short finding", variant(lambda d: d["results"][0]["findings"][0].pop())
    yield "bool size", variant(lambda d: d["results"][0].update(size=True))
    yield "negative offset", variant(lambda d: d["results"][0]["findings"][0].__setitem__(4, -1))
    yield "zero count", variant(lambda d: d["results"][0]["findings"][0].__setitem__(7, 0))
    yield "blob not given", variant(lambda d: d["results"][0].update(blob="/etc/passwd"))
    yield "too big", encode(_good()) + b" " * (20 * 1024 * 1024)


@pytest.mark.parametrize(("name", "answer"), list(_mutations()), ids=[n for n, _ in _mutations()])
def test_a_bad_answer_makes_every_file_of_its_batch_an_error(name: str, answer: object) -> None:
    out = decode(answer, _batch(), DEFAULT_LIMITS)
    assert [p for p, _ in out] == [3, 7]
    for (_, result), task in zip(out, _batch(), strict=True):
        assert isinstance(result, FileReport)
        assert result.path == task.display
        assert result.verdict is Verdict.ERROR
        assert [f.rule for f in result.findings] == ["cluster.bad-result"]


def test_a_model_file_or_a_file_with_folder_findings_is_never_skipped() -> None:
    """The engine skips only a file of no known format whose names are no model file names and
    that no folder check spoke about; a record that skips another is a bad one."""

    issue = Issue("hf.remote-code", Severity.MALICIOUS, "calls os.system", callable="modeling_x")
    cases = [
        Task(1, Path("/t/notes.txt"), "notes.txt", 5, None, None, (), ()),  # may be skipped
        Task(2, Path("/t/model.bin"), "model.bin", 5, None, None, (), ()),
        Task(3, Path("/t/notes.txt"), "notes.txt", 5, None, None, (), ("pytorch_model.bin",)),
        Task(4, Path("/t/modeling_x.py"), "modeling_x.py", 5, None, None, (issue,), ()),
    ]
    verdicts = []
    for task in cases:
        answer = encode([(task.position, Skipped(task.display, SKIPPED_UNKNOWN))])
        ((_, result),) = decode(answer, [task], DEFAULT_LIMITS)
        verdicts.append(result.verdict if isinstance(result, FileReport) else "skipped")
    # the last: refused, with the client's own folder finding kept (outside review 15)
    assert verdicts == ["skipped", Verdict.ERROR, Verdict.ERROR, Verdict.MALICIOUS]
    answer = encode([(1, Skipped("notes.txt", "some other reason"))])
    assert isinstance(decode(answer, cases[:1], DEFAULT_LIMITS)[0][1], FileReport)


def test_a_folder_finding_the_client_handed_out_cannot_be_dropped() -> None:
    issue = Issue("hf.remote-code", Severity.MALICIOUS, "calls os.system", callable="modeling_x")
    task = Task(4, Path("/t/modeling_x.py"), "modeling_x.py", 5, None, None, (issue,), ())
    kept = Finding(
        "hf.remote-code", Severity.MALICIOUS, "calls os.system", Location("modeling_x.py"), "modeling_x"
    )
    good = FileReport("modeling_x.py", "hf-folder", Verdict.MALICIOUS, (kept,), 5, 0.1)
    assert decode(encode([(4, good)]), [task], DEFAULT_LIMITS) == [(4, good)]
    dropped = FileReport("modeling_x.py", "hf-folder", Verdict.CLEAN, (), 5, 0.1)
    ((_, result),) = decode(encode([(4, dropped)]), [task], DEFAULT_LIMITS)
    # refused; the folder finding the client knows stays (outside review 15: it was a bare ERROR)
    assert isinstance(result, FileReport) and result.verdict is Verdict.MALICIOUS
    assert [f.rule for f in result.findings] == ["hf.remote-code", "cluster.bad-result"]


def test_the_verdict_is_derived_from_the_findings_not_sent() -> None:
    doc = json.loads(encode(_good()))
    doc["results"][0]["findings"] = []  # a worker may drop findings, never make a verdict up
    report = decode(json.dumps(doc).encode(), _batch(), DEFAULT_LIMITS)[0][1]
    assert isinstance(report, FileReport) and report.verdict is Verdict.CLEAN and report.findings == ()
    doc = json.loads(encode(_good()))
    assert "verdict" not in doc["results"][0]


def test_worker_deaths_requeue_then_split_then_give_an_error() -> None:
    batch = _batch()
    results: dict[int, FileReport | Skipped] = {}
    notes: list[str] = []
    first = _requeue(_Job(0, batch, 0), "RuntimeError", DEFAULT_LIMITS, results, notes.append)
    assert [(j.batch, j.attempts) for j in first] == [(batch, 1)]  # the whole batch again
    second = _requeue(first[0], "RuntimeError", DEFAULT_LIMITS, results, notes.append)
    assert sorted((j.batch[0].position, j.attempts) for j in second) == [(3, 2), (7, 2)]  # file by file
    assert not results
    last = _requeue(second[0], "RuntimeError", DEFAULT_LIMITS, results, notes.append)
    assert last == [] and MAX_ATTEMPTS == 3
    ((_position, report),) = results.items()
    assert isinstance(report, FileReport) and report.verdict is Verdict.ERROR
    assert [f.rule for f in report.findings] == ["cluster.worker-died"]
    assert len(notes) == 3 and "re-queued" in notes[0]


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [(0.5, 2), (1, 2), (2, 4), (16, 32), (MAX_IN_FLIGHT // 2 - 1, MAX_IN_FLIGHT - 2),
     (MAX_IN_FLIGHT // 2, MAX_IN_FLIGHT), (MAX_IN_FLIGHT // 2 + 1, MAX_IN_FLIGHT), (10_000, MAX_IN_FLIGHT)],
)  # fmt: skip
def test_in_flight_batches_are_twice_the_cpus_and_bounded(cpus: float, expected: int) -> None:
    assert in_flight(cpus) == expected
