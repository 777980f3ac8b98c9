"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import airlock


def test_top_level_names() -> None:
    assert sorted(airlock.__all__) == sorted(
        [
            "AirlockError", "FileReport", "Finding", "FormatError", "IntegrityError", "LimitError", "Limits",
            "Location", "Policy", "PolicyError", "Report", "SandboxError", "Severity", "Skipped", "UsageError",
            "Verdict", "__version__", "load", "scan",
        ]
    )  # fmt: skip
    for name in airlock.__all__:
        assert hasattr(airlock, name), name


def test_error_tree() -> None:
    assert issubclass(airlock.LimitError, airlock.FormatError)
    for cls in (
        airlock.UsageError,
        airlock.FormatError,
        airlock.PolicyError,
        airlock.IntegrityError,
        airlock.SandboxError,
    ):
        assert issubclass(cls, airlock.AirlockError)


def test_exit_codes_are_documented_values() -> None:
    assert {v: v.exit_code for v in airlock.Verdict} == {
        airlock.Verdict.CLEAN: 0,
        airlock.Verdict.MALICIOUS: 1,
        airlock.Verdict.ERROR: 2,
        airlock.Verdict.SUSPICIOUS: 3,
    }


def test_core_scanner_imports_no_heavy_frameworks(tmp_path: Path) -> None:
    """Scanning a torch-named pickle must not import torch, numpy or tensorflow."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)R.")
    code = (
        "import sys, airlock\n"
        f"airlock.scan({str(path)!r})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'numpy', 'tensorflow', 'keras', 'onnx', 'sklearn'})\n"
        "print(heavy)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"
