"""Size limits at N-1 / N / N+1, checked before any step runs."""

from __future__ import annotations

import pytest

from airlock.errors import UsageError
from airlock.guard import Decision, Guard, GuardConfig, SizeLimits, Span


class Exploding:
    name = "exploding"

    def check(self, text: str) -> object:
        raise AssertionError("a step ran on an oversized text")


def guard(**limits: int) -> Guard:
    return Guard(GuardConfig(limits=SizeLimits(**limits)), steps=[Exploding()])  # type: ignore[list-item]


@pytest.mark.parametrize("n", [9, 10])
def test_chars_at_and_below_the_limit_pass(n: int) -> None:
    with pytest.raises(AssertionError, match="oversized"):  # reached the steps
        guard(max_chars=10).check("x" * n)


def test_chars_over_the_limit_are_blocked_before_any_step() -> None:
    result = guard(max_chars=10).check("x" * 11)
    assert result.decision is Decision.BLOCKED and result.text is None
    (finding,) = result.findings
    assert (finding.step, finding.rule, finding.span) == ("validate", "size.chars", Span(10, 11))
    assert "11 characters exceed max_chars 10" in finding.reason


@pytest.mark.parametrize(("size", "blocked"), [(7, False), (8, False), (9, True)])
def test_bytes_limit_counts_utf8(size: int, blocked: bool) -> None:
    text = "\u00e9" * (size // 2) + "x" * (size % 2)  # é is two bytes
    g = Guard(GuardConfig(limits=SizeLimits(max_bytes=8), unicode=None, filter=None, pii=None))
    result = g.check(text)
    assert result.blocked is blocked
    assert g.check(text.encode()).blocked is blocked
    if blocked:
        assert result.findings[0].rule == "size.bytes"


@pytest.mark.parametrize(("lines", "blocked"), [(2, False), (3, False), (4, True)])
def test_lines_limit(lines: int, blocked: bool) -> None:
    g = Guard(GuardConfig(limits=SizeLimits(max_lines=3), unicode=None, filter=None, pii=None))
    text = "\n".join(["line"] * lines)
    result = g.check(text)
    assert result.blocked is blocked
    assert g.check(text + "\n").blocked is blocked  # a final newline starts no new line
    if blocked:
        assert result.findings[0].rule == "size.lines"
        assert result.findings[0].span == Span(15, len(text))


def test_invalid_utf8_and_lone_surrogates_are_blocked() -> None:
    g = Guard(GuardConfig(unicode=None, filter=None, pii=None))
    bad = g.check(b"ok \xff no")
    assert bad.blocked and bad.findings[0].rule == "size.utf8" and bad.findings[0].span == Span(3, 3)
    assert g.check("a\ud800b").findings[0].rule == "size.utf8"


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_limits_are_validated(value: object) -> None:
    with pytest.raises(UsageError, match="max_chars must be a positive integer"):
        SizeLimits(max_chars=value)  # type: ignore[arg-type]
