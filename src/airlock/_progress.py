"""Progress on a terminal for ``airlock hash`` and ``airlock scan``: files, bytes, rate, ETA.

The command line turns it on (:func:`configure`) only when stderr is a terminal and ``--quiet``
was not given; library callers never see it. Work loops report what they finished with
:func:`advance` (cheap: an addition under a lock, or nothing when off); a daemon thread redraws one
line on stderr a few times a second and erases it when the task ends, so a report written to
stdout, or to stderr after the task, is never interleaved with it. Nothing goes to stdout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["advance", "clear", "configure", "enabled", "task"]

_INTERVAL = 0.2


class _State:
    enabled = False
    current: _Task | None = None


_state = _State()


def configure(*, enabled: bool) -> None:
    """Show progress from now on (the CLI decides: stderr is a TTY and no --quiet)."""
    _state.enabled = enabled


def forget() -> None:
    """In a forked worker: show nothing and never touch the parent's task (its lock may have been
    held by the parent's drawing thread at the fork, which the child does not have)."""
    _state.enabled = False
    _state.current = None


def enabled() -> bool:
    """Whether progress is shown (callers skip work done only for it, such as sizing files)."""
    return _state.enabled


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class _Task:
    def __init__(self, label: str, total_bytes: int, total_files: int, stream: TextIO) -> None:
        self.label = label
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.stream = stream
        self.done_bytes = 0
        self.done_files = 0
        import threading  # only when progress is shown: a scan piped to a file never needs it

        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.width = 0
        self.thread = threading.Thread(target=self._loop, name="airlock-progress", daemon=True)

    def add(self, nbytes: int, files: int) -> None:
        with self.lock:
            self.done_bytes += nbytes
            self.done_files += files

    def line(self) -> str:
        with self.lock:
            done, files = self.done_bytes, self.done_files
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        text = (
            f"{self.label}: {files}/{self.total_files} files, {_size(done)} / {_size(self.total_bytes)}, "
            f"{_size(rate)}/s"
        )
        if rate > 0 and self.total_bytes > done:
            text += f", ETA {(self.total_bytes - done) / rate:.0f} s"
        return text

    def draw(self, text: str) -> None:
        pad = max(self.width - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self.width = len(text)

    def erase(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0

    def _loop(self) -> None:
        while not self.stop.wait(_INTERVAL):
            try:
                self.draw(self.line())
            except (OSError, ValueError):  # terminal gone: stop drawing, keep working
                return


@contextmanager
def task(label: str, total_bytes: int, total_files: int) -> Iterator[None]:
    """Show progress for the work inside the block when progress is on; otherwise do nothing."""
    if not _state.enabled or _state.current is not None:
        yield
        return
    current = _Task(label, total_bytes, total_files, sys.stderr)
    _state.current = current
    current.thread.start()
    try:
        yield
    finally:
        current.stop.set()
        current.thread.join()
        _state.current = None
        with suppress(OSError, ValueError):
            current.erase()


def advance(nbytes: int, files: int = 0) -> None:
    """Count ``nbytes`` (and ``files``) more as done, if progress is shown."""
    current = _state.current
    if current is not None:
        current.add(nbytes, files)


def clear() -> None:
    """Erase the progress line now (Ctrl-C: the one-line message must start on a clean line)."""
    current = _state.current
    if current is not None:
        current.stop.set()
        with suppress(OSError, ValueError):
            current.erase()
