"""The findings collector of one file: merging repeats, the per-file cap, the verdict.

A finding beyond ``max_findings_per_file`` is not listed but still weighs on the verdict, through a
``limit.findings`` summary per severity with the exact count.
"""

from __future__ import annotations

import dataclasses

import pytest

from airlock._formats.base import Issue
from airlock._scan.collect import Collector
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Location, Severity, Verdict

CAP = 3
LIMITS = dataclasses.replace(DEFAULT_LIMITS, max_findings_per_file=CAP)


def _issue(n: int, severity: Severity = Severity.INFO, callable_: str | None = None) -> Issue:
    return Issue(f"rule.{n}", severity, f"message {n}", offset=n, callable=callable_)


def test_empty_file_is_clean() -> None:
    report = Collector("f", LIMITS).report("pickle", 10, 0.5)
    assert (report.path, report.verdict, report.findings, report.format, report.size, report.seconds) == (
        "f",
        Verdict.CLEAN,
        (),
        "pickle",
        10,
        0.5,
    )
    assert report.blob is None


@pytest.mark.parametrize("severity", list(Severity), ids=lambda s: s.value)
def test_one_finding_sets_the_verdict(severity: Severity) -> None:
    collector = Collector("f", LIMITS)
    collector.add(("m",), _issue(1, severity, "os.system"))
    report = collector.report(None, 0, 0.0)
    assert report.verdict is severity.verdict
    (finding,) = report.findings
    assert finding.rule == "rule.1"
    assert finding.severity is severity
    assert finding.message == "message 1"
    assert finding.location == Location("f", ("m",), 1)
    assert finding.callable == "os.system"
    assert finding.count == 1


@pytest.mark.parametrize("n", [CAP - 1, CAP, CAP + 1, CAP + 5])
def test_cap_at_n_minus_1_n_n_plus_1(n: int) -> None:
    collector = Collector("f", LIMITS)
    for i in range(n):
        collector.add((), _issue(i))
    findings = collector.report(None, 0, 0.0).findings
    listed = [f for f in findings if f.rule != "limit.findings"]
    assert [f.rule for f in listed] == [f"rule.{i}" for i in range(min(n, CAP))]
    summaries = [f for f in findings if f.rule == "limit.findings"]
    if n <= CAP:
        assert summaries == []
    else:
        (summary,) = summaries
        assert summary.count == n - CAP
        assert summary.severity is Severity.INFO
        assert f"{n - CAP} more INFO findings" in summary.message
        assert summary.location == Location("f")


@pytest.mark.parametrize("severity", [Severity.SUSPICIOUS, Severity.ERROR, Severity.MALICIOUS])
def test_a_finding_beyond_the_cap_still_weighs_on_the_verdict(severity: Severity) -> None:
    collector = Collector("f", LIMITS)
    for i in range(CAP):
        collector.add((), _issue(i))
    collector.add((), _issue(99, severity, "os.system"))
    report = collector.report(None, 0, 0.0)
    assert report.verdict is severity.verdict
    assert "rule.99" not in [f.rule for f in report.findings]
    (summary,) = [f for f in report.findings if f.rule == "limit.findings"]
    assert (summary.severity, summary.count) == (severity, 1)


def test_dropped_counted_per_severity() -> None:
    collector = Collector("f", LIMITS)
    for i in range(CAP):
        collector.add((), _issue(i))
    for i in range(2):
        collector.add((), _issue(100 + i, Severity.SUSPICIOUS))
    collector.add((), _issue(200, Severity.ERROR))
    summaries = {
        f.severity: f.count for f in collector.report(None, 0, 0.0).findings if f.rule == "limit.findings"
    }
    assert summaries == {Severity.SUSPICIOUS: 2, Severity.ERROR: 1}


def test_repeats_are_merged_and_counted_even_at_the_cap() -> None:
    collector = Collector("f", LIMITS)
    for i in range(CAP):
        collector.add((), _issue(i, callable_="os.system"))
    # the same (rule, callable, place) again: counts on the listed one, not dropped
    collector.add(
        (), Issue("rule.0", Severity.INFO, "other text", offset=50, callable="os.system", evidence="e")
    )
    collector.add(
        (), Issue("rule.0", Severity.INFO, "other text", offset=60, callable="os.system", evidence="x")
    )
    findings = collector.report(None, 0, 0.0).findings
    assert [f.rule for f in findings] == ["rule.0", "rule.1", "rule.2"]
    first = findings[0]
    assert first.count == 3
    assert first.location.offset == 0  # the first one located
    assert first.message == "message 0"
    assert first.evidence == "e"  # the first evidence seen is kept


def test_merge_keeps_existing_evidence() -> None:
    collector = Collector("f", LIMITS)
    collector.add((), Issue("r", Severity.MALICIOUS, "m", callable="os.system", evidence="first"))
    collector.add((), Issue("r", Severity.MALICIOUS, "m", callable="os.system", evidence="second"))
    (finding,) = collector.report(None, 0, 0.0).findings
    assert (finding.evidence, finding.count, finding.severity) == ("first", 2, Severity.MALICIOUS)
    assert finding.callable == "os.system"
    assert finding.location == Location("f", (), None)


def test_different_members_or_callables_or_messages_are_distinct() -> None:
    collector = Collector("f", DEFAULT_LIMITS)
    collector.add(("a",), Issue("r", Severity.INFO, "m", callable="x.y"))
    collector.add(("b",), Issue("r", Severity.INFO, "m", callable="x.y"))
    collector.add(("a",), Issue("r", Severity.INFO, "m", callable="x.z"))
    # without a callable the message distinguishes two findings
    collector.add(("a",), Issue("r", Severity.INFO, "m1"))
    collector.add(("a",), Issue("r", Severity.INFO, "m2"))
    # with a callable the message does not
    collector.add(("a",), Issue("r", Severity.INFO, "other", callable="x.y"))
    findings = collector.report(None, 0, 0.0).findings
    assert len(findings) == 5
    assert [f.count for f in findings] == [2, 1, 1, 1, 1]


def test_formats_are_joined_main_first_without_duplicates() -> None:
    collector = Collector("f", LIMITS)
    collector.note_format("pickle")
    collector.note_format(None)
    collector.note_format("zip")
    collector.note_format("pickle")
    assert collector.report("zip", 0, 0.0).format == "zip+pickle"
    assert collector.report(None, 0, 0.0).format == "pickle+zip"
    assert Collector("f", LIMITS).report(None, 0, 0.0).format is None


def test_blob_is_reported_as_text() -> None:
    from pathlib import Path

    assert Collector("f", LIMITS).report(None, 0, 0.0, Path("/c/blobs/ab")).blob == "/c/blobs/ab"


def test_default_cap_is_used() -> None:
    collector = Collector("f", DEFAULT_LIMITS)
    n = DEFAULT_LIMITS.max_findings_per_file
    for i in range(n + 1):
        collector.add((), _issue(i))
    findings = collector.report(None, 0, 0.0).findings
    assert len(findings) == n + 1
    assert findings[-1].rule == "limit.findings"
    assert findings[-1].count == 1
