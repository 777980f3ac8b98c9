"""The escape suite, the job-isolation suite, the ordinary models and the host-side suites again, as an unprivileged caller (uid 65534).

CI runs as root, so this test re-runs those files in a subprocess that drops to uid 65534 first
(the same staging the launcher uses makes a root-only interpreter path visible). On a non-root
machine the main run already is the unprivileged run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from airlock.sandbox._staging import make_preexec, plan_staging

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="the caller is already unprivileged: the main run covers it")
def test_escape_suite_as_unprivileged_user() -> None:
    work = Path(tempfile.mkdtemp(prefix="airlock-unpriv-"))
    try:
        home = work / "home"
        home.mkdir()
        for path in (work, home):
            os.chown(path, NOBODY, NOBODY)
        # the interpreter, the venv and the clone may all sit under /root (0700): stage what the run needs
        needed = [os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(REPO)]
        preexec = make_preexec(plan_staging(needed), (NOBODY, NOBODY), None, ())
        done = subprocess.run(
            [
                sys.executable,
                "-B",
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--basetemp",
                str(work / "t"),
                "tests/sandbox/test_escape.py",
                "tests/sandbox/test_jobs.py",
                "tests/sandbox/test_models.py",
                "tests/sandbox/test_host_side.py",  # the host side against hostile jobs (issue 11)
                "tests/sandbox/test_bytes_channel.py",  # string tensors from hostile jobs
                "tests/sandbox/test_gate.py",
                "tests/sandbox/test_paths.py",
                "tests/sandbox/test_attack_pids.py",
                "tests/sandbox/test_attack_mounts.py",
                "tests/sandbox/test_attack_lastpid.py",
                "tests/sandbox/test_gpu.py",  # GPU lanes on a fake device tree
            ],
            cwd=REPO,
            # PYTHONPATH: this checkout's airlock, not whichever one the venv has installed
            env={
                "HOME": str(home),
                "PATH": "/usr/bin:/bin",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONPATH": str(REPO / "src"),
            },
            preexec_fn=preexec,
            capture_output=True,
            timeout=600,
            check=False,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, output[-4000:]
    assert " passed" in output and "skipped" not in output and "failed" not in output, output[-2000:]
