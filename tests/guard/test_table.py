"""GuardConfig from a table (a serve config's TOML, a JSON object): strict keys, types and values."""

from __future__ import annotations

import tomllib

import pytest

from airlock.errors import UsageError
from airlock.guard import Action, Decision, Guard, GuardConfig, Sink, config_from_table


def test_empty_table_is_the_default() -> None:
    assert config_from_table({}) == GuardConfig()


def test_a_toml_table() -> None:
    table = tomllib.loads(
        """
        hidden = "block"
        links = "redact"
        allowed_hosts = [".cdn.example"]
        pii = "redact"
        pseudonymize = true
        pii_entities = ["EMAIL_ADDRESS"]
        charset = ["L", "N", "P", "Zs"]
        json_schema = { type = "string" }
        sink = "html"
        max_chars = 500
        """
    )
    config = config_from_table(table, "models.m.guard")
    assert config.unicode is not None and config.unicode.bidi is Action.BLOCK
    assert config.filter is not None and config.filter.links is Action.REDACT
    assert config.filter.allowed_hosts == frozenset({".cdn.example"})
    assert config.pii is not None and config.pii.pseudonymize and config.pii.entities == ("EMAIL_ADDRESS",)
    assert config.encode is not None and config.encode.sink is Sink.HTML
    assert config.limits.max_chars == 500
    assert Guard(config).check('"a\u202eb"').decision is Decision.BLOCKED


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"hiden": "redact"}, r"unknown key\(s\) \['hiden'\] in \[models.m.guard\]"),
        ({"pii": "remove"}, r"models.m.guard.pii must be block, redact, flag or off, got 'remove'"),
        ({"max_chars": "10"}, r"models.m.guard.max_chars must be of type int, got str"),
        ({"max_chars": True}, r"max_chars must be of type int, got bool"),
        ({"nfkc": "yes"}, r"nfkc must be of type bool"),
        ({"sink": "xml"}, r"sink must be html, markdown, shell or sql"),
        ({"pii": "off", "pseudonymize": True}, r"pii is off"),
        ({"allowed_hosts": ["a", 1]}, r"allowed_hosts must be a list of strings"),
        ({"charset_action": "redact"}, r"charset_action needs models.m.guard.charset"),
        ({"pii_entities": ["SSN"]}, r"unknown PII entities \['SSN'\]"),
    ],
)
def test_errors_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        config_from_table(table, "models.m.guard")


def test_off_turns_steps_off() -> None:
    config = config_from_table(
        {"pii": "off", "markup": "off", "images": "off", "links": "off", "hidden": "off"}
    )
    assert config.pii is None
    assert Guard(config).check("<script>x</script> a\u200bb bob@example.com").decision is Decision.ALLOWED
