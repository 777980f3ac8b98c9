"""Outside review of ``airlock scan --ray`` (review2): its four findings, each failing before the fix.

The cluster tests start one real local Ray cluster with token authentication (tests/_ray_cluster.py)
and run the real ``airlock`` console script, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock import __version__
from airlock._formats.base import Issue
from airlock._scan.cluster import PROTOCOL, decode
from airlock._scan.pool import Task
from airlock.limits import DEFAULT_LIMITS
from airlock.results import FileReport, Severity, Verdict
from tests._ray_cluster import Cluster, running_cluster

AIRLOCK = Path(sys.executable).with_name("airlock")  # the console script (sys.path[0] = its bin dir)
# GLOBAL os.system + REDUCE: what the scanner calls MALICIOUS (never loaded here)
EVIL_PICKLE = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."

ray_group = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as started:
        yield started


def _scan(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, dict[str, str]]:
    proc = subprocess.run(
        [str(AIRLOCK), "scan", "--format", "json", *args], check=False, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, {f["path"]: f["verdict"] for f in json.loads(proc.stdout)["files"]}


SHADOW = """
import os, sys
_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_real = next(p for p in sys.path if p and os.path.abspath(p) != _here
             and os.path.isfile(os.path.join(p, "airlock", "__init__.py")))
__path__[:] = [os.path.join(_real, "airlock")]
__file__ = os.path.join(_real, "airlock", "__init__.py")
exec(compile(open(__file__).read(), __file__, "exec"))
import airlock._scan.cluster as _c
_orig = _c.scan_batch
def _clean(shared, batch):
    import json
    data = json.loads(_orig(shared, batch))
    for r in data["results"]:
        if "findings" in r:
            r["findings"] = []
    open(os.path.join(_here, "..", "shadow-ran"), "w").write("x")
    return json.dumps(data).encode()
_c.scan_batch = _clean
"""


@ray_group
@pytest.mark.slow
def test_the_scanned_folder_as_cwd_cannot_replace_the_workers_scanner(
    cluster: Cluster, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    (folder / "airlock").mkdir(parents=True)
    (folder / "airlock" / "__init__.py").write_text(SHADOW)
    (folder / "model.pkl").write_bytes(EVIL_PICKLE)
    local_rc, local = _scan(cluster.env(), folder, str(folder))
    assert local[str(folder / "model.pkl")] == "MALICIOUS" and local_rc == 1
    rc, on_ray = _scan(cluster.env(), folder, "--ray", cluster.address, str(folder))
    assert not (tmp_path / "shadow-ran").exists(), "code from the scanned folder ran on a Ray worker"
    assert (rc, on_ray) == (local_rc, local)


@ray_group
@pytest.mark.slow
def test_a_relative_path_gives_the_local_report(cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(EVIL_PICKLE)
    local = _scan(cluster.env(), tmp_path, "model.pkl")
    assert local == (1, {"model.pkl": "MALICIOUS"})
    assert _scan(cluster.env(), tmp_path, "--ray", cluster.address, "model.pkl") == local


def _answer(record: dict[str, object]) -> bytes:
    return json.dumps({"protocol": PROTOCOL, "airlock": __version__, "results": [record]}).encode()


def test_a_limit_summary_does_not_excuse_a_dropped_folder_finding() -> None:
    issue = Issue("hf.remote-code", Severity.MALICIOUS, "auto_map names remote code", callable="x.Y")
    task = Task(0, Path("/m/config.json"), "config.json", 100, None, None, (issue,), ())
    summary: list[object] = [
        "limit.findings",
        "INFO",
        "0 more INFO findings not listed",
        [],
        None,
        None,
        None,
        1,
    ]
    record = {"p": 0, "path": "config.json", "format": "json", "size": 100, "seconds": 0.1, "blob": None,
              "findings": [summary]}  # fmt: skip
    [(_, result)] = decode(_answer(record), [task], DEFAULT_LIMITS)
    assert isinstance(result, FileReport)
    assert result.verdict is not Verdict.CLEAN


def test_a_record_about_a_file_of_another_size_is_an_error() -> None:
    task = Task(0, Path("/m/model.pkl"), "model.pkl", 1000, None, None, (), ())
    for size in (999, 1001, 5):
        record = {"p": 0, "path": "model.pkl", "format": "pickle", "size": size, "seconds": 0.1, "blob": None,
                  "findings": []}  # fmt: skip
        [(_, result)] = decode(_answer(record), [task], DEFAULT_LIMITS)
        assert isinstance(result, FileReport)
        assert result.verdict is Verdict.ERROR, size
