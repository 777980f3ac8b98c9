"""Properties over generated texts: the pipeline never crashes, spans stay inside the original,
and what it lets through holds no hidden characters and no markup the filter would remove."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlock.guard import Decision, Guard, GuardConfig
from airlock.guard._unicode import _HIDDEN

NO_PII = Guard(GuardConfig(pii=None))
#: tokens that build markup, encodings and hidden characters when joined in random order
MARKUP = st.sampled_from(
    [*"<>/=\"' \n\t[]()!:&#%;\\@.?", "script", "img", "src", "onerror", "javascript", "https", "//",
     "evil.example", "&#x6a;", "%6a", "\u200b", "\u202e", "\uff1c", "\uff1e", "\u0430", "iframe", "style",
     "url("]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_any_text(text: str) -> None:
    result = NO_PII.check(text)
    for finding in result.findings:
        assert 0 <= finding.span.start <= finding.span.end <= len(text)
    if result.decision is not Decision.BLOCKED:
        assert result.text is not None
        leftover = [c for c in result.text if _HIDDEN.match(c)]
        # what stays is only what the unicode step allows on purpose (joiners, selectors, flags)
        assert NO_PII.steps[0].check(result.text).hits == (), (ascii(text), ascii(leftover))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MARKUP, max_size=30).map("".join))
def test_output_has_no_markup_left(text: str) -> None:
    result = NO_PII.check(text)
    assert result.text is not None
    again = NO_PII.check(result.text)
    markup = [
        f.rule
        for f in again.findings
        if f.rule in ("filter.html-tag", "filter.html-event-handler", "filter.script-url")
    ]
    assert markup == [], (ascii(text), ascii(result.text))
