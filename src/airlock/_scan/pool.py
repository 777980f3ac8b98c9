"""Scanning many files in worker processes, cheaply enough to pay.

One task per file cost more than it saved (2,000 small files: 1.1 s in one process, 3-4 s with two
workers): every task pickled the policy, the limits and the verification again, and the parent
spent its time feeding the queue. Here

* what every file shares (folder, limits, policy, verification, folder format) reaches each worker
  once, when it starts (:func:`_start`; with ``fork`` it is inherited, not even pickled);
* files travel in batches (:func:`batches`): a large file alone, small files together up to
  :data:`BATCH_FILES` files or :data:`BATCH_BYTES` bytes, largest first, so the last batch to
  finish is a small one and no worker idles behind a big file started late;
* results come back in the order of the files, whatever the batch order, so a report is the same
  bytes for any number of jobs (apart from timings).

A worker that dies (killed, out of memory) fails the scan with :class:`~airlock.errors.AirlockError`:
fail closed, never a report that lacks its files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from airlock import _progress
from airlock._formats.base import Issue
from airlock._scan.engine import scan_file
from airlock.errors import AirlockError
from airlock.limits import Limits
from airlock.policy import Policy
from airlock.results import FileReport, Skipped

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, NamedTuple

    from airlock.integrity import Verified
else:
    from airlock._record import NamedTuple

__all__ = [
    "AUTO_MIN_BYTES",
    "AUTO_MIN_FILES",
    "BATCH_BYTES",
    "BATCH_FILES",
    "Task",
    "auto_jobs",
    "batches",
    "run",
]

#: small files one batch holds at most (a batch is one round trip to a worker)
BATCH_FILES: Final = 64
#: bytes one batch of small files holds at most; a file this size or larger is a batch of its own
BATCH_BYTES: Final = 8 * 1024 * 1024
#: with ``jobs=None`` (the CLI's default) a scan uses worker processes from this many files ...
AUTO_MIN_FILES: Final = 256
#: ... or from this many bytes in two or more files (then one file takes long enough to pay a fork)
AUTO_MIN_BYTES: Final = 256 * 1024 * 1024
#: workers ``jobs=None`` uses at most (each holds its own read buffers)
AUTO_MAX_JOBS: Final = 8


class Task(NamedTuple):
    """One file to scan: what differs from file to file (the rest is :class:`_Shared`)."""

    position: int  # the file's place in the walk (the report keeps that order)
    path: Path
    display: str
    size: int
    rel: str | None
    blob: Path | None
    folder_issues: tuple[Issue, ...]
    aliases: tuple[str, ...]


class _Shared(NamedTuple):
    base: Path
    limits: Limits
    policy: Policy
    verified: Verified | None
    folder_format: str | None


_WORKER: dict[str, _Shared] = {}  # "shared": set in each worker by _start


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def auto_jobs(files: int, total_bytes: int) -> int:
    """Worker processes for ``jobs=None``: the CPUs available (at most :data:`AUTO_MAX_JOBS`) when
    the scan is big enough to pay for them, else 1 (no pool at all)."""
    cpus = min(available_cpus(), AUTO_MAX_JOBS)
    if cpus < 2 or files < 2:
        return 1
    if files >= AUTO_MIN_FILES or total_bytes >= AUTO_MIN_BYTES:
        return min(cpus, files)
    return 1


def batches(tasks: list[Task]) -> list[list[Task]]:
    """Largest files first; a file of :data:`BATCH_BYTES` or more alone, smaller ones grouped."""
    out: list[list[Task]] = []
    current: list[Task] = []
    held = 0
    for task in sorted(tasks, key=lambda t: (-t.size, t.position)):
        if task.size >= BATCH_BYTES:
            out.append([task])
            continue
        if current and (len(current) >= BATCH_FILES or held + task.size > BATCH_BYTES):
            out.append(current)
            current, held = [], 0
        current.append(task)
        held += task.size
    if current:
        out.append(current)
    return out


def _start(shared: _Shared) -> None:
    _progress.forget()  # the parent counts the batches; a worker draws nothing
    _WORKER["shared"] = shared


def _scan_batch(batch: list[Task]) -> list[tuple[int, FileReport | Skipped]]:
    shared = _WORKER["shared"]  # a KeyError: a worker not started through _start
    return [(task.position, _one(task, shared)) for task in batch]


def _one(task: Task, shared: _Shared) -> FileReport | Skipped:
    return scan_file(
        task.path, task.display, shared.base, shared.limits, shared.policy, shared.verified, task.rel,
        blob=task.blob, folder_issues=task.folder_issues, folder_format=shared.folder_format,
        aliases=task.aliases,
    )  # fmt: skip


def run(
    tasks: list[Task],
    jobs: int,
    *,
    base: Path,
    limits: Limits,
    policy: Policy,
    verified: Verified | None,
    folder_format: str | None,
    advance: Callable[[int, int], None],
) -> Iterator[tuple[int, FileReport | Skipped]]:
    """Scan ``tasks``; ``advance(bytes, files)`` after each file (one process) or batch (a pool)."""
    shared = _Shared(base, limits, policy, verified, folder_format)
    if jobs == 1 or len(tasks) < 2:
        for task in tasks:
            yield task.position, _one(task, shared)
            advance(task.size, 1)
        return
    import multiprocessing  # only when asked for: costly to import
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    work = batches(tasks)
    # fork: the workers inherit the parent's imported modules and the shared state as they are
    # (nothing re-imported, nothing pickled); the scan starts no threads before this point.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(work)), mp_context=context, initializer=_start, initargs=(shared,)
    ) as pool:
        futures = [(batch, pool.submit(_scan_batch, batch)) for batch in work]
        for batch, future in futures:
            try:
                results = future.result()
            except BrokenProcessPool as exc:
                raise AirlockError(
                    f"a scan worker process died (killed or out of memory) while scanning {batch[0].display}"
                    f"{f' and {len(batch) - 1} other file(s)' if len(batch) > 1 else ''}; no report"
                ) from exc
            yield from results
            advance(sum(task.size for task in batch), len(batch))
