"""The hashing engine: byte ranges of files, hashed on a thread pool, one chunk in flight per thread.

Memory is bounded by ``workers * chunk_size``: nothing is mapped and no file is read whole. hashlib
and blake3 release the GIL while they hash (and ``os.pread`` while it reads), so threads give real
parallelism across files and across the shards of one large file. Never shells out.

Each range is read through a descriptor whose identity (device, inode, size) is checked against what
the walk saw, and the size and modification time are checked again at the end, so a file swapped or
rewritten while it is hashed is an ``IntegrityError`` rather than a digest of something else.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

from airlock import _progress
from airlock.errors import IntegrityError, UsageError
from airlock.integrity._params import Algorithm, HashLimits
from airlock.integrity._walk import FileRef

__all__ = ["Range", "hash_ranges", "new_hasher"]


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def new_hasher(algorithm: Algorithm, *, threads: int = 1) -> Hasher:
    """A fresh hash object; ``threads`` > 1 lets BLAKE3 hash one stream on several cores."""
    if algorithm is Algorithm.SHA256:
        return hashlib.sha256()
    if algorithm is Algorithm.BLAKE2B:
        return hashlib.blake2b()
    try:
        import blake3
    except ImportError as exc:
        raise UsageError(
            "digest algorithm blake3 needs the blake3 package: pip install 'model-airlock[integrity]'"
        ) from exc
    hasher: Hasher = blake3.blake3(max_threads=threads if threads > 1 else 1)
    return hasher


@dataclass(frozen=True)
class Range:
    """Bytes ``[start, end)`` of one listed file."""

    file: FileRef
    start: int
    end: int


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _open_checked(ref: FileRef) -> int:
    flags = _OPEN_FLAGS | (0 if ref.via_symlink else _NOFOLLOW)
    try:
        fd = os.open(ref.abspath, flags)
    except OSError as exc:
        raise IntegrityError(f"unreadable: {ref.rel} ({exc.strerror})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (ref.dev, ref.ino):
            raise IntegrityError(f"file changed while hashing: {ref.rel} was replaced after it was listed")
        if st.st_size != ref.size:
            raise IntegrityError(
                f"file changed while hashing: {ref.rel} size expected {ref.size} got {st.st_size}"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Buffers:
    """The read size each worker uses (memory in use: one chunk per worker)."""

    def __init__(self, size: int) -> None:
        self.size = size


def _hash_range(item: Range, algorithm: Algorithm, buffers: _Buffers, threads: int) -> str:
    ref = item.file
    hasher = new_hasher(algorithm, threads=threads)
    fd = _open_checked(ref)
    try:
        chunk = buffers.size
        offset = item.start
        while offset < item.end:
            # A fresh bytes object per read measured about 9% faster than preadv into one reused
            # buffer (same memory bound: one chunk per worker is alive at a time).
            data = os.pread(fd, min(chunk, item.end - offset), offset)
            if not data:
                raise IntegrityError(
                    f"file changed while hashing: {ref.rel} ended at byte {offset}, expected {ref.size} bytes"
                )
            hasher.update(data)
            offset += len(data)
            _progress.advance(len(data))
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != (ref.size, ref.mtime_ns, ref.ctime_ns):
            raise IntegrityError(f"file changed while hashing: {ref.rel} was modified during hashing")
        if item.end == ref.size:
            _progress.advance(0, files=1)
    except OSError as exc:
        raise IntegrityError(f"unreadable: {ref.rel} ({exc.strerror})") from exc
    finally:
        os.close(fd)
    return hasher.hexdigest()


def hash_ranges(items: Sequence[Range], algorithm: Algorithm, limits: HashLimits) -> list[str]:
    """Hex digests of ``items``, in the same order. The first failure cancels the rest and is raised."""
    if not items:
        return []
    # BLAKE3 can spread one stream over cores itself; give it the cores the pool leaves idle.
    workers = min(limits.workers, len(items))
    inner_threads = max(1, limits.workers // len(items)) if algorithm is Algorithm.BLAKE3 else 1
    buffers = _Buffers(limits.chunk_size)
    results: list[str] = [""] * len(items)
    # Largest first, so one big file does not start last and leave the other workers idle.
    order = sorted(range(len(items)), key=lambda i: items[i].end - items[i].start, reverse=True)

    def task(index: int) -> Callable[[], None]:
        def run() -> None:
            results[index] = _hash_range(items[index], algorithm, buffers, inner_threads)

        return run

    if workers == 1:
        for index in order:
            task(index)()
        return results
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="airlock-hash") as pool:
        futures: list[Future[None]] = [pool.submit(task(index)) for index in order]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            exc = future.exception()
            if exc is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise exc
    for future in futures:
        future.result()
    return results
