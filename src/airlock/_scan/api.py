"""``airlock.scan``: the public entry point of the scanner."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from airlock._formats.base import Issue
from airlock._scan.collect import Collector
from airlock._scan.engine import scan_file
from airlock._scan.walk import Entry, walk
from airlock.errors import UsageError
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.policy import Policy
from airlock.results import FileReport, Report, Severity, Skipped

__all__ = ["scan"]


def scan(
    path: str | os.PathLike[str],
    *,
    policy: Policy | None = None,
    limits: Limits = DEFAULT_LIMITS,
    jobs: int = 1,
) -> Report:
    """Scan a file or a folder, statically, and return a :class:`~airlock.results.Report`.

    Nothing in the scanned files is executed; nothing is written; no network is used; no
    configuration is read from the current directory or from the scanned tree. Every file is
    sniffed by content. ``jobs`` > 1 scans files in that many worker processes.
    """
    if jobs < 1:
        raise UsageError(f"jobs must be at least 1, got {jobs}")
    policy = policy or Policy()
    root = Path(path)
    entries = list(walk(root, limits))
    base = root if root.is_dir() and not root.is_symlink() else root.parent
    files: list[tuple[int, Entry]] = []
    reports: dict[int, FileReport] = {}
    skipped: list[Skipped] = []
    for index, entry in enumerate(entries):
        if entry.kind == "file":
            files.append((index, entry))
        elif entry.kind == "symlink":
            if entry.inside:
                skipped.append(
                    Skipped(
                        entry.display, f"symlink to {entry.target} (not followed; target scanned in place)"
                    )
                )
            else:
                reports[index] = _symlink_report(entry, limits)
        else:
            skipped.append(Skipped(entry.display, "special file (device, FIFO or socket): not opened"))
    results: dict[int, FileReport | Skipped] = {}
    if jobs == 1 or len(files) < 2:
        for index, entry in files:
            results[index] = scan_file(entry.path, entry.display, base, limits, policy)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {
                index: pool.submit(scan_file, entry.path, entry.display, base, limits, policy)
                for index, entry in files
            }
            for index, future in futures.items():
                results[index] = future.result()
    for index in sorted(results):
        result = results[index]
        if isinstance(result, Skipped):
            skipped.append(result)
        else:
            reports[index] = result
    ordered = tuple(reports[i] for i in sorted(reports))
    return Report(
        root=str(root),
        files=ordered,
        skipped=tuple(skipped),
        allowances=tuple(sorted(policy.allow)),
    )


def _symlink_report(entry: Entry, limits: Limits) -> FileReport:
    collector = Collector(entry.display, limits)
    collector.add(
        (),
        Issue(
            "fs.symlink-outside",
            Severity.SUSPICIOUS,
            f"symlink to {entry.target} leaves the scanned folder; not followed, so its target is unscanned",
        ),
    )
    return collector.report(None, 0, 0.0)
