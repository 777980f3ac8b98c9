"""Verdict algebra, table-driven: every pair of verdicts, every severity, every exit code.

A swapped rank, a wrong exit code or a scan that analysed nothing reported CLEAN each fail here.
"""

from __future__ import annotations

import itertools

import pytest

from airlock.results import FileReport, Finding, Location, Report, Severity, Verdict

#: The documented order, worst last (docs/scan.md): MALICIOUS > ERROR > SUSPICIOUS > CLEAN.
ORDER = [Verdict.CLEAN, Verdict.SUSPICIOUS, Verdict.ERROR, Verdict.MALICIOUS]
EXIT_CODES = {Verdict.CLEAN: 0, Verdict.MALICIOUS: 1, Verdict.ERROR: 2, Verdict.SUSPICIOUS: 3}
SEVERITY_VERDICT = {
    Severity.INFO: Verdict.CLEAN,
    Severity.SUSPICIOUS: Verdict.SUSPICIOUS,
    Severity.ERROR: Verdict.ERROR,
    Severity.MALICIOUS: Verdict.MALICIOUS,
}


def test_every_verdict_is_ranked_in_the_documented_order() -> None:
    assert set(ORDER) == set(Verdict)
    assert [v.rank for v in ORDER] == [0, 1, 2, 3]


@pytest.mark.parametrize("verdict", list(Verdict), ids=lambda v: v.value)
def test_exit_code(verdict: Verdict) -> None:
    assert verdict.exit_code == EXIT_CODES[verdict]


@pytest.mark.parametrize(("a", "b"), list(itertools.product(ORDER, repeat=2)), ids=lambda v: v.value)
def test_worst_of_every_pair(a: Verdict, b: Verdict) -> None:
    expected = ORDER[max(ORDER.index(a), ORDER.index(b))]
    assert Verdict.worst([a, b]) is expected
    assert Verdict.worst((b, a)) is expected
    assert Verdict.worst([a, Verdict.CLEAN, b]) is expected


def test_worst_of_every_sequence_of_three_with_repeats() -> None:
    """Runs of one verdict (a tree of clean files) are skipped by identity: the worst still wins."""
    for seq in itertools.product(ORDER, repeat=3):
        expected = ORDER[max(ORDER.index(v) for v in seq)]
        assert Verdict.worst([*seq, *seq]) is expected, seq


@pytest.mark.parametrize("verdict", ORDER, ids=lambda v: v.value)
def test_worst_of_one_is_itself(verdict: Verdict) -> None:
    assert Verdict.worst([verdict]) is verdict


def test_worst_of_nothing_is_clean() -> None:
    # Only at the file level: a file without findings is clean. A *report* without files is not.
    assert Verdict.worst([]) is Verdict.CLEAN


def test_worst_of_all_four_in_any_order_is_malicious() -> None:
    for perm in itertools.permutations(ORDER):
        assert Verdict.worst(list(perm)) is Verdict.MALICIOUS


@pytest.mark.parametrize("severity", list(Severity), ids=lambda s: s.value)
def test_severity_to_verdict(severity: Severity) -> None:
    assert severity.verdict is SEVERITY_VERDICT[severity]


def _file(verdict: Verdict, name: str = "f") -> FileReport:
    return FileReport(path=name, format="pickle", verdict=verdict, findings=(), size=1, seconds=0.0)


def test_report_that_analysed_nothing_is_an_error_never_clean() -> None:
    report = Report(root="/empty", files=())
    assert report.verdict is Verdict.ERROR
    assert report.exit_code == 2


@pytest.mark.parametrize(("a", "b"), list(itertools.product(ORDER, repeat=2)), ids=lambda v: v.value)
def test_report_verdict_is_the_worst_file(a: Verdict, b: Verdict) -> None:
    report = Report(root="r", files=(_file(a, "a"), _file(b, "b")))
    expected = ORDER[max(ORDER.index(a), ORDER.index(b))]
    assert report.verdict is expected
    assert report.exit_code == EXIT_CODES[expected]


def test_report_of_one_clean_file_is_clean() -> None:
    assert Report(root="r", files=(_file(Verdict.CLEAN),)).verdict is Verdict.CLEAN


def test_report_findings_flattened_in_file_order() -> None:
    loc = Location("a")
    f1 = Finding("r1", Severity.INFO, "m", loc)
    f2 = Finding("r2", Severity.MALICIOUS, "m", loc)
    f3 = Finding("r3", Severity.ERROR, "m", Location("b"))
    a = FileReport("a", None, Verdict.MALICIOUS, (f1, f2), 1, 0.0)
    b = FileReport("b", None, Verdict.ERROR, (f3,), 1, 0.0)
    assert Report(root="r", files=(a, b)).findings() == (f1, f2, f3)


def test_all_roots() -> None:
    assert Report(root="r", files=()).all_roots == ("r",)
    assert Report(root="r", files=(), roots=("r", "s")).all_roots == ("r", "s")


@pytest.mark.parametrize(
    ("location", "text"),
    [
        (Location("m.pt"), "m.pt"),
        (Location("m.pt", ("archive/data.pkl",)), "m.pt > archive/data.pkl"),
        (Location("m.pt", ("a", "b"), 0), "m.pt > a > b @ 0"),
        (Location("m.pt", (), 17), "m.pt @ 17"),
    ],
)
def test_location_text(location: Location, text: str) -> None:
    assert str(location) == text


def test_finding_defaults() -> None:
    finding = Finding("r", Severity.INFO, "m", Location("p"))
    assert (finding.callable, finding.evidence, finding.count) == (None, None, 1)
