"""``--format json``: a stable, versioned document (schema in ``report.schema.json``, docs/scan.md)."""

from __future__ import annotations

import json

from airlock import __version__
from airlock.results import SCHEMA_VERSION, Finding, Report

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _finding(finding: Finding) -> dict[str, Any]:
    return {
        "rule": finding.rule,
        "severity": finding.severity.value,
        "message": finding.message,
        "callable": finding.callable,
        "evidence": finding.evidence,
        "members": list(finding.location.members),
        "offset": finding.location.offset,
        "count": finding.count,
    }


def to_dict(report: Report) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "airlock", "version": __version__},
        # one scanned path: its name; several: null, and ``roots`` lists them (schema 1.1)
        "root": report.root if len(report.all_roots) == 1 else None,
        "roots": list(report.all_roots),
        "verdict": report.verdict.value,
        "exit_code": report.exit_code,
        "unsafe_options": list(report.unsafe_options),
        "allowances": list(report.allowances),
        "integrity": report.integrity,
        "files": [
            {
                "path": f.path,
                "format": f.format,
                "verdict": f.verdict.value,
                "size": f.size,
                "seconds": round(f.seconds, 6),
                "findings": [_finding(x) for x in f.findings],
                **({"blob": f.blob} if f.blob is not None else {}),
            }
            for f in report.files
        ],
        "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
    }


def render(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2, sort_keys=False) + "\n"
