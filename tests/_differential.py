"""The shared half of the differential fuzzers: generated files on disk, a real loader's reading.

Each fuzzer (``tests/formats/{npy,torchzip}_fuzz.py``, ``tests/formats_hf/{gguf,st}_fuzz.py``)
generates its own files and compares its own notion of a reading; writing the files and running
the real loader — only ever in a throwaway subprocess — is the same for all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def write_corpus(folder: Path, seed: int, files: list[bytes], suffix: str) -> list[Path]:
    """Write ``files`` as ``<seed>-<index><suffix>`` under ``folder``; return their paths in order."""
    paths = []
    for index, raw in enumerate(files):
        path = folder / f"{seed}-{index}{suffix}"
        path.write_bytes(raw)
        paths.append(path)
    return paths


def reference_readings(script: str, paths: list[Path]) -> list[Any]:
    """Run ``script`` (which prints one JSON list, an item per path) on ``paths`` in a subprocess."""
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(done.stdout)
    assert isinstance(result, list) and len(result) == len(paths), done.stdout[:300]
    return result
