"""Validation step (``validate``): allowed character classes, and JSON input against a JSON Schema.

Size limits are checked earlier, before any step (:mod:`airlock.guard._sizes`). JSON is parsed by
airlock's strict parser (no duplicate keys, no NaN, no lone surrogates; nesting bounded) and then
validated with the ``jsonschema`` library; the schema comes from the caller's configuration only,
and ``$ref`` to anything outside it is never fetched (``jsonschema`` resolves no remote references
unless given a retriever, and none is given). Reasons name the schema's path and keyword, never a
value of the input.
"""

from __future__ import annotations

import copy
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from airlock.errors import FormatError, UsageError
from airlock.guard._step import StepReport
from airlock.guard._types import Action, Hit

__all__ = ["ValidationConfig", "ValidationStep"]

#: the general categories of Unicode (a one-letter class stands for all its subclasses)
_CATEGORIES: Final = frozenset(
    "L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So Z Zs Zl Zp C Cc Cf Cs Co Cn".split()
)
#: at most this many character-class findings per text (the rest are counted in the last one)
MAX_CHARSET_HITS: Final = 32


@dataclass(frozen=True)
class ValidationConfig:
    """Strict rules on what the text may be.

    ``allowed_categories``: Unicode general categories a character may have (``"L"`` letters,
    ``"N"`` numbers, ``"P"`` punctuation, ``"Zs"`` space separators, ...); ``None`` (default)
    does not restrict. ``allowed_chars``: characters allowed whatever their category (default tab,
    newline, carriage return). ``charset_action``: what a disallowed character gets (default
    BLOCK; REDACT removes it). ``json_schema``: when given, the text must be one JSON document
    valid against this schema (Draft 2020-12 unless ``$schema`` says otherwise), or it is BLOCKED.
    """

    allowed_categories: frozenset[str] | None = None
    allowed_chars: str = "\t\n\r"
    charset_action: Action = Action.BLOCK
    json_schema: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.allowed_categories is not None:
            unknown = sorted(set(self.allowed_categories) - _CATEGORIES)
            if unknown:
                raise UsageError(f"unknown Unicode general categories {unknown}; use e.g. L, N, P, Zs")
        if not isinstance(self.charset_action, Action):
            raise UsageError(
                f"ValidationConfig.charset_action must be an Action, got {self.charset_action!r}"
            )
        if self.json_schema is not None:
            object.__setattr__(self, "json_schema", copy.deepcopy(dict(self.json_schema)))
            _validator(self.json_schema)  # a bad schema is a configuration error, raised now


def _validator(schema: Mapping[str, Any]) -> Any:
    try:
        import jsonschema
        from jsonschema import validators
    except ModuleNotFoundError as exc:
        raise UsageError(
            "JSON Schema validation needs the 'guard' extra: pip install 'model-airlock[guard]'"
        ) from exc
    cls = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise UsageError(f"json_schema is not a valid JSON Schema: {exc.message}") from exc
    remote = _remote_refs(schema)
    if remote:
        raise UsageError(
            f"json_schema refers to {remote[0]!r} outside itself: airlock never fetches a schema "
            "(put the referenced schema under $defs and refer to it with '#/$defs/...')"
        )
    # jsonschema's default registry fetches any $ref it cannot resolve with urllib at validation
    # time (a DNS lookup and an HTTP GET, outside review 19); this registry holds only the bundled
    # meta-schemas and its retrieve refuses, so a reference is resolved inside the schema or not at all
    from jsonschema_specifications import REGISTRY as OFFLINE  # type: ignore[import-untyped]

    return cls(schema, registry=OFFLINE)


#: keywords whose string value is a URI reference to another schema
_REF_KEYWORDS: Final = ("$ref", "$dynamicRef", "$recursiveRef", "$schema")


def _remote_refs(schema: Mapping[str, Any]) -> list[str]:
    """Every reference in ``schema`` that names a document other than the schema itself (anything
    but a '#' fragment, a bundled meta-schema for ``$schema``, or an ``$id`` the schema declares).
    Found at construction so a configuration that would need the network is refused up front; the
    offline registry refuses whatever this misses (a check sees it as an unjudgeable document)."""
    from jsonschema_specifications import REGISTRY as OFFLINE

    ids: set[str] = set()
    refs: list[tuple[str, str]] = []
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("$id", "id") and isinstance(value, str):
                    ids.add(value.split("#", 1)[0])
                elif key in _REF_KEYWORDS and isinstance(value, str):
                    refs.append((key, value))
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    known = set(OFFLINE) | {u.rstrip("/") for u in OFFLINE}
    remote: list[str] = []
    for _key, ref in refs:
        document = ref.split("#", 1)[0]
        if document and document not in ids and document.rstrip("/") not in known:
            remote.append(ref)
    return remote


def _has_overflowed_number(value: Any) -> bool:
    """A float that is not finite: the strict parser refuses ``NaN`` and ``Infinity`` literals, but
    ``1e999999`` overflows to infinity and passed ``"type": "number"`` (nesting is bounded by the
    parser; this walk keeps its own stack)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class ValidationStep:
    name = "validate"

    def __init__(self, config: ValidationConfig) -> None:
        self.config = config
        allowed = config.allowed_categories
        self._allowed = None if allowed is None else frozenset(allowed)
        self._schema = None if config.json_schema is None else _validator(config.json_schema)

    def check(self, text: str) -> StepReport:
        hits: list[Hit] = []
        if self._allowed is not None:
            hits.extend(self._charset(text, self._allowed))
            if any(h.action is Action.BLOCK for h in hits):
                return StepReport(tuple(hits))
        if self._schema is not None:
            hits.extend(self._json(text))
        return StepReport(tuple(hits))

    def _charset(self, text: str, allowed: frozenset[str]) -> list[Hit]:
        extra = self.config.allowed_chars
        hits: list[Hit] = []
        cache: dict[str, bool] = {}
        start = -1
        bad_total = 0
        for index, char in enumerate(text):
            ok = cache.get(char)
            if ok is None:
                category = unicodedata.category(char)
                ok = cache[char] = char in extra or category in allowed or category[0] in allowed
            if not ok:
                bad_total += 1
                if start < 0:
                    start = index
            elif start >= 0:
                hits.append(self._charset_hit(text, start, index))
                start = -1
        if start >= 0:
            hits.append(self._charset_hit(text, start, len(text)))
        if len(hits) > MAX_CHARSET_HITS:
            last = hits[MAX_CHARSET_HITS - 1]
            summary = Hit(
                last.rule,
                f"{bad_total} characters outside the allowed classes in {len(hits)} runs (the rest of them)",
                last.start,
                hits[-1].end,
                last.action,
            )
            hits = [*hits[: MAX_CHARSET_HITS - 1], summary]
        return hits

    def _charset_hit(self, text: str, start: int, end: int) -> Hit:
        category = unicodedata.category(text[start])
        reason = f"{end - start} characters outside the allowed classes, first U+{ord(text[start]):04X} ({category})"
        return Hit("validate.charset", reason, start, end, self.config.charset_action)

    def _json(self, text: str) -> list[Hit]:
        from airlock._strictjson import parse_json_strict

        try:
            value = parse_json_strict(text, "guarded text")
        except FormatError as exc:
            reason = str(exc).split(":", 1)[0] if "not valid JSON" in str(exc) else "not strict JSON"
            return [Hit("validate.json", reason, 0, len(text), Action.BLOCK)]
        if _has_overflowed_number(value):
            reason = "not strict JSON: a number beyond the range of a double (it reads as Infinity)"
            return [Hit("validate.json", reason, 0, len(text), Action.BLOCK)]
        from referencing.exceptions import Unresolvable as _Unresolvable

        try:
            errors = (
                sorted(self._schema.iter_errors(value), key=lambda e: list(e.schema_path))
                if self._schema
                else []
            )
        except (ArithmeticError, ValueError, TypeError, RecursionError, LookupError, _Unresolvable) as exc:
            # fail closed: a document the validator cannot judge is refused, never an exception
            # (a 401-digit integer against "multipleOf": 0.1 raised OverflowError: outside review 14)
            reason = f"the document cannot be checked against the schema ({type(exc).__name__})"
            return [Hit("validate.json-schema", reason, 0, len(text), Action.BLOCK)]
        if not errors:
            return []
        first = errors[0]
        where = "/".join(str(p) for p in first.schema_path) or "(root)"
        reason = f"{len(errors)} JSON Schema violation(s); first: schema {where} ({first.validator})"
        return [Hit("validate.json-schema", reason, 0, len(text), Action.BLOCK)]
