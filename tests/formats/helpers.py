"""Shared helpers for the format tests: payload pickles, scanning one file, rebuilding zips."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from airlock import scan
from airlock.results import FileReport, Verdict
from tests.fixtures.picklegen import call_global, program


def payload(marker: Path, protocol: int = 2) -> bytes:
    """A pickle that, if a real unpickler ran it, would only ``touch`` ``marker``."""
    return program(call_global("os", "system", f"touch {marker}"), protocol=protocol)


def scan_one(path: Path) -> FileReport:
    report = scan(path)
    assert len(report.files) == 1, report
    return report.files[0]


def rules(report: FileReport) -> set[str]:
    return {f.rule for f in report.findings}


def assert_malicious(report: FileReport, callable_name: str, marker: Path) -> None:
    assert report.verdict is Verdict.MALICIOUS, report
    hits = [f for f in report.findings if f.callable and callable_name in f.callable]
    assert hits, f"no finding names {callable_name}: {report.findings}"
    assert not marker.exists(), "the payload ran"


def rebuild_zip(raw: bytes, replace: dict[str, bytes], add: list[tuple[str, bytes]] | None = None) -> bytes:
    """The archive with some members' content replaced (order kept) and members appended."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, replace.get(info.filename, src.read(info)), info.compress_type)
        for name, data in add or []:
            dst.writestr(name, data)
    return out.getvalue()
