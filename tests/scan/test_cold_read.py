"""A scan reads what it analyses, not the tensors around it, even when the file is not cached.

The scanner maps the file and touches a zip's directory, its pickle and the first bytes of each
storage. On a page-cache miss the kernel reads ahead around every touched page (8 MiB windows are
common): without advice to the contrary, a cold scan of a 1 GiB checkpoint read all of it from disk.
Measured here in disk reads (``ru_inblock``) of a scanning process, after the file's pages are
dropped from the cache with ``posix_fadvise(DONTNEED)``; a control read of the whole file proves
that the accounting sees disk reads on this file system (tmpfs has none to see).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

_STORAGES = 48
_STORAGE_BYTES = 1 << 20

#: In a subprocess: drop the file from the page cache, scan it, report the bytes read from disk;
#: then drop it again and read it whole (the control).
_PROBE = """
import json, os, resource, sys
from pathlib import Path
import airlock

path = sys.argv[1]

def dropped():
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)

def read_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_inblock * 512

dropped()
before = read_bytes()
report = airlock.scan(Path(path))
scan = read_bytes() - before
dropped()
before = read_bytes()
with open(path, 'rb', buffering=0) as fh:
    while fh.read(1 << 20):
        pass
control = read_bytes() - before
print(json.dumps({"verdict": report.verdict.value, "scan": scan, "control": control}))
"""


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="needs posix_fadvise to drop cached pages")
def test_cold_scan_of_a_checkpoint_does_not_read_its_tensors(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    state = {f"layer{i}": torch.ones(_STORAGE_BYTES // 4) for i in range(_STORAGES)}
    torch.save(state, path)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())  # dirty pages cannot be dropped
    size = path.stat().st_size
    assert size > _STORAGES * _STORAGE_BYTES
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(proc.stdout)
    assert result["verdict"] == "CLEAN"
    if result["control"] < size // 2:
        pytest.skip(
            f"this file system shows no disk reads to measure (control read {result['control']} bytes)"
        )
    # a 4 KiB page per storage head, the directory and the pickle: far below read-ahead windows
    # (128 KiB, the smallest common default, would already be 6 MiB here)
    assert result["scan"] < _STORAGES * 64 * 1024, result
