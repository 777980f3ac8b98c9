"""Validation: allowed character classes and JSON against a JSON Schema (strict parser first)."""

from __future__ import annotations

import pytest

from airlock.errors import UsageError
from airlock.guard import Action, Decision, Guard, GuardConfig, Span, ValidationConfig

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "n": {"type": "integer"}},
    "required": ["name"],
    "additionalProperties": False,
}


def guard(validation: ValidationConfig) -> Guard:
    return Guard(GuardConfig(unicode=None, filter=None, pii=None, validation=validation))


def test_charset_blocks_with_the_run_span() -> None:
    g = guard(ValidationConfig(allowed_categories=frozenset({"L", "N", "Zs", "P"})))
    assert g.check("Hello, world 42.\n").decision is Decision.ALLOWED
    result = g.check("price: 5 $$ now")
    assert result.decision is Decision.BLOCKED
    (finding,) = result.findings
    assert (finding.rule, finding.span) == ("validate.charset", Span(9, 11))
    assert "U+0024 (Sc)" in finding.reason


def test_charset_redact_removes_and_bounds_the_findings() -> None:
    g = guard(
        ValidationConfig(allowed_categories=frozenset({"Ll"}), charset_action=Action.REDACT, allowed_chars="")
    )
    result = g.check("a1b2c")
    assert result.text == "abc"
    many = g.check("a1" * 500)
    assert len(many.findings) == 32 and "500 characters" in many.findings[-1].reason


def test_unknown_category_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown Unicode general categories"):
        ValidationConfig(allowed_categories=frozenset({"Letters"}))


def test_json_schema_valid_and_invalid() -> None:
    g = guard(ValidationConfig(json_schema=SCHEMA))
    assert g.check('{"name": "bob", "n": 3}').decision is Decision.ALLOWED
    result = g.check('{"name": "a-very-long-secret-name"}')
    assert result.decision is Decision.BLOCKED
    (finding,) = result.findings
    assert finding.rule == "validate.json-schema"
    assert "properties/name/maxLength" in finding.reason
    assert "secret" not in finding.reason  # the schema's path, never the value


@pytest.mark.parametrize(
    "text",
    ['{"name": "a", "name": "b"}', '{"name": NaN}', "{'name': 1}", '{"name": "\\ud800"}', "[" * 100_000],
)
def test_not_strict_json_is_blocked_without_quoting_it(text: str) -> None:
    result = guard(ValidationConfig(json_schema=SCHEMA)).check(text)
    assert result.decision is Decision.BLOCKED
    assert result.findings[0].rule == "validate.json"
    assert '"name"' not in result.findings[0].reason


def test_bad_schema_is_refused_at_construction() -> None:
    with pytest.raises(UsageError, match="not a valid JSON Schema"):
        ValidationConfig(json_schema={"type": "no-such-type"})


def test_schema_is_copied() -> None:
    schema = {"type": "object"}
    config = ValidationConfig(json_schema=schema)
    schema["type"] = "string"
    assert guard(config).check("{}").decision is Decision.ALLOWED
