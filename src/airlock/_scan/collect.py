"""Gather findings for one file: attach locations, merge repeats, cap the list, derive the verdict."""

from __future__ import annotations

from pathlib import Path

from airlock._formats.base import Issue
from airlock.limits import Limits
from airlock.results import FileReport, Finding, Location, Severity, Verdict

__all__ = ["Collector"]


class Collector:
    """Findings of one top-level file. The same (rule, callable, place) fired again only counts."""

    def __init__(self, display: str, limits: Limits) -> None:
        self._display = display
        self._limits = limits
        self._order: list[tuple[str, str | None, tuple[str, ...], str]] = []
        self._findings: dict[tuple[str, str | None, tuple[str, ...], str], Finding] = {}
        self._dropped: dict[Severity, int] = {}
        self._formats: list[str] = []

    def note_format(self, name: str | None) -> None:
        if name is not None and name not in self._formats:
            self._formats.append(name)

    def add(self, members: tuple[str, ...], issue: Issue) -> None:
        # Messages carry the detail that distinguishes two findings without a callable.
        key = (issue.rule, issue.callable, members, issue.message if issue.callable is None else "")
        existing = self._findings.get(key)
        if existing is not None:
            self._findings[key] = Finding(
                rule=existing.rule,
                severity=existing.severity,
                message=existing.message,
                location=existing.location,
                callable=existing.callable,
                evidence=existing.evidence or issue.evidence,
                count=existing.count + 1,
            )
            return
        if len(self._order) >= self._limits.max_findings_per_file:
            self._dropped[issue.severity] = self._dropped.get(issue.severity, 0) + 1
            return
        self._order.append(key)
        self._findings[key] = Finding(
            rule=issue.rule,
            severity=issue.severity,
            message=issue.message,
            location=Location(self._display, members, issue.offset),
            callable=issue.callable,
            evidence=issue.evidence,
        )

    def report(self, fmt: str | None, size: int, seconds: float, blob: Path | None = None) -> FileReport:
        findings = [self._findings[key] for key in self._order]
        for severity, count in self._dropped.items():
            # Dropped findings still weigh on the verdict through this summary finding.
            findings.append(
                Finding(
                    rule="limit.findings",
                    severity=severity,
                    message=f"{count} more {severity.value} findings not listed (limit max_findings_per_file)",
                    location=Location(self._display),
                    count=count,
                )
            )
        verdict = Verdict.worst([f.severity.verdict for f in findings])
        formats = ([fmt] if fmt else []) + [f for f in self._formats if f != fmt]
        return FileReport(
            path=self._display,
            format="+".join(formats) if formats else None,
            verdict=verdict,
            findings=tuple(findings),
            size=size,
            seconds=seconds,
            blob=None if blob is None else str(blob),
        )
