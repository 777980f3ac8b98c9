"""``airlock scan -``: the scanner reads files, so standard input is spooled to a private file first.

The copy goes into a fresh 0700 temporary folder (a 0600 file), is bounded by the scan's
``max_total_decompressed_bytes`` limit (exceeding it is an error, never a partial scan), and is
removed when the scan is done. The report names it ``-``. It is judged as a model file: content no
reader knows, or none, is an ERROR (never skipped).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from airlock.errors import LimitError

__all__ = ["STDIN", "spooled_stdin"]

STDIN = "-"
_CHUNK = 1 << 20


@contextmanager
def spooled_stdin(max_bytes: int) -> Iterator[Path]:
    import shutil
    import tempfile  # only for "-": every other scan would pay for importing random and tempfile

    folder = tempfile.mkdtemp(prefix="airlock-stdin-")
    try:
        # Piped bytes are always meant as a model: the spooled copy has a model file name, so
        # content no reader knows (or none at all) is an ERROR, never skipped as a README would be.
        path = Path(folder) / "stdin.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        total = 0
        with os.fdopen(fd, "wb") as out:
            source = sys.stdin.buffer
            while chunk := source.read(min(_CHUNK, max_bytes + 1 - total)):
                total += len(chunk)
                if total > max_bytes:
                    raise LimitError(
                        f"standard input is larger than {max_bytes} bytes (limit max_total_decompressed_bytes)"
                    )
                out.write(chunk)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
