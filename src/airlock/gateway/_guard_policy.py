"""A text model's guard policy in the serve config: ``[models.X.guard.input]`` and
``[models.X.guard.output]`` (docs/serve.md, "Guarding text").

Each direction is a table of :func:`airlock.guard.config_from_table` (the vocabulary of
``airlock guard``'s flags), read strictly: an unknown key is an error naming it. A direction whose
table is absent is not guarded; a model without a ``guard`` table is not guarded at all. The output
table also takes ``canaries`` (strings) and ``canary_file`` (one per line): texts that must never
appear in a response, compared after :func:`canonical` (their letters and digits only: hidden
characters, markup, accents, punctuation and white space removed, look-alikes mapped, case folded).
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from airlock.errors import UsageError
from airlock.guard import GuardConfig, config_from_table
from airlock.guard._unicode import _HIDDEN, _latin_lookalikes

__all__ = ["MAX_CANARIES", "MIN_CANARY", "GuardPolicy", "canonical", "guard_policy"]

#: a canary shorter than this (canonical characters) would block ordinary answers
MIN_CANARY: Final = 8
MAX_CANARY: Final = 1024
MAX_CANARIES: Final = 10_000
#: the largest canary file read
_MAX_CANARY_FILE: Final = 1 << 20
#: what a canary is not: anything but letters and digits (punctuation, symbols, white space, the
#: combining marks NFKD splits off, "_")
_NOT_ALNUM: Final = re.compile(r"[\W_]+")
#: an HTML/XML tag or comment (an answer a browser renders shows the text around it joined)
_TAG: Final = re.compile(r"<[^<>]*>")
_OUTPUT_KEYS: Final = ("canaries", "canary_file")


@lru_cache(maxsize=1)
def _lookalikes() -> dict[int, str]:
    """Letters (the guard's homoglyph table) and digits (``З`` -> ``3``) that imitate ASCII ones."""
    import json
    from importlib import resources

    table = dict(_latin_lookalikes())
    data = json.loads(
        resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    )
    for char, entries in data.items():
        if len(char) != 1 or char.isascii() or not char.isalnum() or char in table:
            continue
        target = next((e.get("c", "") for e in entries if len(e.get("c", "")) == 1), "")
        if target.isascii() and target.isalnum():
            table[char] = target
    return str.maketrans(table)


def canonical(text: str) -> str:
    """The form canaries are compared in: the text's letters and digits in order, as a reader sees
    them. Hidden characters (zero-width, bidi, tags, controls) removed, HTML entities decoded and
    tags removed, NFKD (compatibility forms: fullwidth, mathematical letters), letters and digits
    that imitate Latin ones made Latin (Unicode confusables: Cyrillic ``а``), case folded, and then
    everything that is not a letter or digit removed: combining marks (accents), punctuation and
    dashes of any script, symbols, white space (``Ｓ-É\u200bC&#82;ЕT`` -> ``secret``). A canary is
    a secret's letters and digits; what a model puts between them does not hide it."""
    text = _TAG.sub("", html.unescape(_HIDDEN.sub("", text)))
    text = unicodedata.normalize("NFKD", text).translate(_lookalikes()).casefold()
    return _NOT_ALNUM.sub("", unicodedata.normalize("NFKD", text))


@dataclass(frozen=True)
class GuardPolicy:
    """What the gateway checks for one text model. ``None``: that direction is not guarded."""

    inputs: GuardConfig | None = None
    outputs: GuardConfig | None = None
    #: canonical forms (:func:`canonical`); never logged, audited or counted by value
    canaries: tuple[str, ...] = ()

    @property
    def pseudonymize(self) -> bool:
        return bool(self.inputs is not None and self.inputs.pii is not None and self.inputs.pii.pseudonymize)

    @property
    def checks_output(self) -> bool:
        """Whether a response is held until it is checked (output guard, canaries, pseudonyms to
        restore): streamed answers are then buffered (docs/serve.md)."""
        return self.outputs is not None or bool(self.canaries) or self.pseudonymize

    def __repr__(self) -> str:  # the canaries are secrets: never in a repr that could be logged
        return f"GuardPolicy(inputs={self.inputs is not None}, outputs={self.outputs is not None}, canaries={len(self.canaries)})"


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"config: [{where}] must be a table, got {type(value).__name__}")
    return value


def _canary_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"config: {where}.canaries must be a list of strings")
    return list(value)


def _canary_file(base: Path, value: object, where: str) -> list[str]:
    if not isinstance(value, str):
        raise UsageError(f"config: {where}.canary_file must be a string (a path)")
    path = Path(value) if Path(value).is_absolute() else base / value
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_CANARY_FILE + 1)
    except OSError as exc:
        raise UsageError(f"config: {where}.canary_file: cannot read {path}: {exc.strerror}") from None
    if len(raw) > _MAX_CANARY_FILE:
        raise UsageError(f"config: {where}.canary_file is larger than {_MAX_CANARY_FILE} bytes")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"config: {where}.canary_file is not UTF-8") from None
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _canaries(base: Path, table: dict[str, Any], where: str) -> tuple[str, ...]:
    raw = _canary_list(table.get("canaries", []), where)
    if "canary_file" in table:
        raw += _canary_file(base, table["canary_file"], where)
    if len(raw) > MAX_CANARIES:
        raise UsageError(f"config: {where} has {len(raw)} canaries; at most {MAX_CANARIES}")
    found: list[str] = []
    for index, value in enumerate(raw):
        form = canonical(value)
        if not MIN_CANARY <= len(form) <= MAX_CANARY:
            # the message names the position, never the secret itself
            raise UsageError(
                f"config: {where}: canary #{index + 1} has {len(form)} characters after normalisation; "
                f"a canary must have {MIN_CANARY} to {MAX_CANARY} (a short one would block ordinary answers)"
            )
        found.append(form)
    return tuple(dict.fromkeys(found))


def _direction(table: dict[str, Any], where: str) -> GuardConfig:
    try:
        return config_from_table(table, where=where)
    except UsageError as exc:
        raise UsageError(f"config: {exc}") from None


def guard_policy(base: Path, model: str, data: object) -> GuardPolicy:
    """The policy of ``[models.<model>.guard]`` (``base``: the config file's folder, for
    ``canary_file``); a :class:`UsageError` naming the key for anything unknown or wrong."""
    where = f"models.{model}.guard"
    table = _table(data, where)
    unknown = sorted(set(table) - {"input", "output"})
    if unknown:
        raise UsageError(
            f"config: unknown key(s) in [{where}]: {', '.join(unknown)} "
            f"(policies go in [{where}.input] and [{where}.output])"
        )
    inputs = outputs = None
    canaries: tuple[str, ...] = ()
    if "input" in table:
        inputs = _direction(_table(table["input"], f"{where}.input"), f"{where}.input")
    if "output" in table:
        output = dict(_table(table["output"], f"{where}.output"))
        canaries = _canaries(base, output, f"{where}.output")
        for key in _OUTPUT_KEYS:
            output.pop(key, None)
        # an output table holding only canaries checks canaries only
        if output or not canaries:
            outputs = _direction(output, f"{where}.output")
        if outputs is not None and outputs.pii is not None and outputs.pii.pseudonymize:
            raise UsageError(f"config: {where}.output.pseudonymize: pseudonyms are made from inputs only")
    if inputs is None and outputs is None and not canaries:
        raise UsageError(f"config: [{where}] needs an [{where}.input] or [{where}.output] table")
    return GuardPolicy(inputs, outputs, canaries)
