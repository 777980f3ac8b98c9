"""Proof that a malicious fixture works: the real loader runs its harmless payload.

The loader runs in a throwaway interpreter (never in the test process); the payload makes a marker
folder, which the proof checks and removes, so that the scan under test starts from a clean place.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: torch.load as a victim calls it, errors after the payload ran ignored
TORCH_LOAD = "import torch, sys\ntry: torch.load(sys.argv[1], weights_only=False)\nexcept Exception: pass"


def loader_runs_payload(code: str, path: Path, marker: Path, *, timeout: float = 120) -> None:
    """Run ``code`` (``sys.argv[1]`` is ``path``) in a fresh interpreter; assert it made ``marker``."""
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=timeout, capture_output=True)
    assert marker.is_dir(), f"the real loader did not run the payload of {path.name}"
    marker.rmdir()
