"""``airlock scan`` leaves without tearing the interpreter down once its report is written
(``airlock._cli._leave_now``): nothing may be lost on the way out. Every run here is the real
script in a subprocess, its stdout a pipe (block-buffered: what a skipped flush would lose), with a
report far larger than a pipe holds, and is compared with the same scan run in this process."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from airlock._cli import main
from tests.fixtures.picklegen import call_global, program

#: files in the tree: more than pool.AUTO_MIN_FILES, so the default scan forks workers too
FILES = 400

#: wraps the real entry point: records the code os._exit was called with in the process that
#: ran it (a forked worker leaves through os._exit as well: not recorded), then leaves
_WRAPPER = """
import os, sys
marker, me, real = sys.argv[1], os.getpid(), os._exit
def _exit(code):
    if os.getpid() == me:
        with open(marker, "w") as out:
            out.write(str(code))
    real(code)
os._exit = _exit
if sys.argv[2] == "atexit":
    import atexit
    atexit.register(lambda: open(marker + ".atexit", "w").write("ran"))
sys.argv = ["airlock", *sys.argv[3:]]
from airlock._cli import entry_point
entry_point()
"""


def _tree(root: Path, kind: str) -> Path:
    root.mkdir()
    for i in range(FILES):
        (root / f"p{i:04d}.pkl").write_bytes(pickle.dumps({"i": i, "s": "x" * (i % 50)}))
    if kind == "malicious":
        (root / "p0007.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    elif kind == "suspicious":
        (root / "p0007.pkl").write_bytes(program(call_global("mypkg.layers", "MyLayer")))
    elif kind == "error":
        (root / "p0007.pkl").write_bytes(b"\x80\x04\x95garbage")
    return root


def _normal(text: str, root: Path) -> str:
    return re.sub(r'"seconds": [0-9.e-]+', "", text).replace(str(root), "ROOT")


def _in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().out


#: stdout block-buffered, as a pipe makes it (PYTHONUNBUFFERED would hide a skipped flush)
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def _script(args: list[str], marker: Path, mode: str = "plain") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(marker), mode, *args],
        capture_output=True,
        timeout=120,
        check=False,
        env=_ENV,
    )


@pytest.mark.parametrize(("kind", "code"), [("clean", 0), ("malicious", 1), ("suspicious", 3), ("error", 2)])
def test_stdout_and_exit_code_are_complete_after_the_quick_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, code: int
) -> None:
    root = _tree(tmp_path / "tree", kind)
    expected_code, expected = _in_process(["scan", "--format", "json", str(root)], capsys)
    assert expected_code == code
    assert len(expected) > 65536  # more than a pipe holds: the parent writes while the reader reads
    for jobs in ([], ["--jobs", "1"], ["--jobs", "2"]):
        marker = tmp_path / f"exit-{len(jobs)}-{jobs[-1:]}"
        proc = _script(["scan", "--format", "json", *jobs, str(root)], marker)
        assert proc.returncode == code, proc.stderr
        assert marker.read_text() == str(code)  # it did leave through os._exit, with that code
        out = proc.stdout.decode("utf-8")
        assert out.endswith("}\n")
        assert len(json.loads(out)["files"]) == FILES
        assert _normal(out, root) == _normal(expected, root)
        assert proc.stderr == b""
    # a short report stays in stdout's buffer until it is flushed: the one a skipped flush loses
    one = str(root / "p0007.pkl")
    _, short = _in_process(["scan", one], capsys)
    assert len(short) < 4096 and short.endswith(f"exit code {code}\n")
    marker = tmp_path / "exit-short"
    proc = _script(["scan", one], marker)
    assert (proc.returncode, marker.read_text()) == (code, str(code)), proc.stderr
    assert proc.stdout.decode("utf-8").replace(str(root), "ROOT") == short.replace(str(root), "ROOT")


def test_the_output_file_is_complete_and_closed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "tree", "malicious")
    _, expected = _in_process(["scan", "--format", "json", str(root)], capsys)
    for fmt, jobs in (("json", "1"), ("json", "2"), ("sarif", "2"), ("html", "2")):
        out = tmp_path / f"report-{jobs}.{fmt}"
        marker = tmp_path / f"exit-{fmt}-{jobs}"
        proc = _script(["scan", "--format", fmt, "--jobs", jobs, "-o", str(out), str(root)], marker)
        assert proc.returncode == 1, proc.stderr
        assert marker.read_text() == "1"
        assert proc.stdout == b""
        text = out.read_text(encoding="utf-8")
        if fmt == "html":
            assert text.rstrip().endswith("</html>") and text.count("p0007.pkl") >= 1
        else:
            document = json.loads(text)
            if fmt == "json":
                assert _normal(text, root) == _normal(expected, root)
            else:
                assert len(document["runs"][0]["results"]) >= 1


def test_an_exit_handler_gets_the_usual_exit(tmp_path: Path) -> None:
    """Something registered to run at exit (coverage, a caller's handler) runs: no quick exit then."""
    root = _tree(tmp_path / "tree", "clean")
    marker = tmp_path / "exit"
    proc = _script(["scan", "-q", "--jobs", "2", str(root)], marker, mode="atexit")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()  # not through os._exit
    assert Path(f"{marker}.atexit").read_text() == "ran"
    assert b"verdict: CLEAN" in proc.stdout


def test_a_closed_stdout_is_still_reported(tmp_path: Path) -> None:
    """A report that cannot be written (the reader went away) is not a silent success."""
    root = _tree(tmp_path / "tree", "clean")
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run(
        [sys.executable, "-m", "airlock", "scan", "--format", "json", str(root)],
        stdout=write,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
        env=_ENV,
    )
    os.close(write)
    assert proc.returncode != 0
