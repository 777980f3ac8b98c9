"""A limit must be a finite positive number: NaN passed ``value <= 0`` and then no comparison with
it is ever true, so ``--max-seconds-per-file nan`` silently switched the per-file deadline off
(and ``--max-pickle-opcodes``/``--max-decompressed-bytes`` in the API likewise)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.errors import UsageError
from airlock.limits import DEFAULT_LIMITS, Limits


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0, -1, 0.0])
@pytest.mark.parametrize("name", ["max_seconds_per_file", "max_pickle_opcodes", "max_decompressed_bytes"])
def test_non_finite_or_non_positive_limits_are_refused(name: str, value: float) -> None:
    with pytest.raises(UsageError, match="positive finite"):
        DEFAULT_LIMITS.replace(**{name: value})
    with pytest.raises(UsageError):
        Limits(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("name", ["wall_seconds", "memory_bytes", "max_frame_bytes"])
def test_sandbox_limits_refuse_non_finite_values(name: str, value: float) -> None:
    # `airlock run --timeout nan` reached SandboxLimits(wall_seconds=nan): no wall-clock bound
    from airlock.sandbox._policy import SandboxLimits

    with pytest.raises(UsageError, match="positive finite"):
        SandboxLimits(**{name: value})  # type: ignore[arg-type]


def test_near_miss_values_are_accepted() -> None:
    assert DEFAULT_LIMITS.replace(max_seconds_per_file=1e-9).max_seconds_per_file == 1e-9
    assert DEFAULT_LIMITS.replace(max_pickle_opcodes=1).max_pickle_opcodes == 1
    assert DEFAULT_LIMITS.replace(max_seconds_per_file=1e300).max_seconds_per_file == 1e300


@pytest.mark.parametrize("spelling", ["nan", "NaN", "inf", "-inf"])
def test_cli_refuses_a_non_finite_deadline(tmp_path: Path, spelling: str) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(b"N.")
    out = subprocess.run(
        [sys.executable, "-m", "airlock", "scan", f"--max-seconds-per-file={spelling}", str(model)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "positive finite" in out.stderr
    assert "Traceback" not in out.stderr
