"""Shared helpers for the ML-format tests: run a reader directly, or scan a path."""

from __future__ import annotations

from pathlib import Path

import airlock
from airlock import Verdict
from airlock._formats.base import Fact, Issue, ReadContext, Reader
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.results import FileReport, Finding


def read_all(
    reader: Reader, data: bytes, path: Path, *, on_disk: bool = True, limits: Limits = DEFAULT_LIMITS
) -> list[Fact]:
    ctx = ReadContext(
        limits=limits,
        file_path=path,
        root=path.parent,
        on_disk=on_disk,
        members=() if on_disk else ("a.zip",),
    )
    return list(reader.read(memoryview(data), ctx))


def issues(facts: list[Fact]) -> list[Issue]:
    return [f for f in facts if isinstance(f, Issue)]


def scan_one(path: Path) -> FileReport:
    report = airlock.scan(path)
    assert len(report.files) == 1, report
    return report.files[0]


def rules(report: FileReport) -> set[str]:
    return {f.rule for f in report.findings}


def only(report: FileReport, rule: str) -> Finding:
    found = [f for f in report.findings if f.rule == rule]
    assert found, f"no {rule} finding in {report.findings}"
    return found[0]


def assert_clean(report: FileReport) -> None:
    assert report.verdict is Verdict.CLEAN, [(f.rule, f.message) for f in report.findings]
