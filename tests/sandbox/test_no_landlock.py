"""The escape suite and the job-isolation suite again, with Landlock unavailable.

Landlock is optional at the standard level (older kernels, some containers, non-root users on
locked-down hosts lack it), so nothing the sandbox promises may depend on it alone. This test
re-runs those files in a subprocess with ``AIRLOCK_SANDBOX_UNSAFE_NO_LANDLOCK=1`` (the loud,
test-and-diagnosis-only switch that makes airlock treat Landlock as missing) and checks that the
jobs really ran without it. Together with the main run (all layers, as root in CI) and
``test_unprivileged.py`` (uid 65534, no cgroups) these are the three configurations of issue 11.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock._cli import main
from airlock.sandbox._kernel import UNSAFE_NO_LANDLOCK_ENV
from airlock.sandbox._layers import doctor

REPO = Path(__file__).resolve().parents[2]


def test_doctor_reports_landlock_disabled_loudly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(UNSAFE_NO_LANDLOCK_ENV, "1")
    landlock = next(layer for layer in doctor().layers if layer.name == "landlock")
    assert not landlock.active
    assert f"DISABLED by {UNSAFE_NO_LANDLOCK_ENV}=1" in landlock.detail
    assert main(["doctor"]) == 0  # optional at the standard level: still runs, but says so
    captured = capsys.readouterr()
    assert "Landlock is DISABLED" in captured.err
    assert f"MISSING  landlock          optional  DISABLED by {UNSAFE_NO_LANDLOCK_ENV}=1" in captured.out
    assert main(["doctor", "--level", "strict"]) == 2


def test_escape_suite_without_landlock(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "HOME", "PYTHONPATH", "LANG", "LC_ALL", "TMPDIR")
    }
    env[UNSAFE_NO_LANDLOCK_ENV] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
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
            str(tmp_path / "t"),
            "tests/sandbox/test_escape.py",
            "tests/sandbox/test_jobs.py",
            "tests/sandbox/test_paths.py",
            "tests/sandbox/test_attack_pids.py",
            "tests/sandbox/test_attack_mounts.py",
            "tests/sandbox/test_attack_lastpid.py",
            "tests/sandbox/test_gpu.py",  # GPU lanes on a fake device tree
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, output[-4000:]
    assert " passed" in output and "skipped" not in output and "failed" not in output, output[-2000:]
