"""Unicode steps: hidden characters (``unicode``), NFKC normalisation (``nfkc``) and homoglyph
tricks (``confusables``).

Hidden characters are the Unicode ``Default_Ignorable_Code_Point`` set (zero-width characters,
fillers, bidi controls, tag characters, variation selectors; DerivedCoreProperties.txt), every
other format character (category Cf), and the C0/C1 controls except tab, newline and carriage
return. Each is named by the most specific rule: ``unicode.bidi`` (embeddings, overrides and
isolates: "Trojan Source"), ``unicode.tag`` (U+E0000..E007F, "ASCII smuggling"),
``unicode.variation-selector`` (a selector not directly after a visible character, or a run of
them: data smuggled in selectors), ``unicode.control`` and ``unicode.invisible``.

What stays: a single variation selector where Unicode defines variation sequences (FE0E/FE0F after
an emoji or a keycap digit, FE00-FE0D after a non-ASCII character, U+E0100-E01EF after a Han
ideograph; one selector after every ASCII letter would smuggle a byte per letter), a zero-width joiner or
non-joiner inside an emoji sequence or between letters of a script that uses joiners (Arabic,
Persian, Indic; never inside Latin, Cyrillic or Greek words), and the tag
sequence of one of the three RGI subdivision flags (U+1F3F4 + gbeng / gbsct / gbwls + U+E007F:
England, Scotland, Wales).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from airlock.errors import UsageError
from airlock.guard._step import EMPTY, StepReport
from airlock.guard._types import Action, Edit, Hit

__all__ = ["ConfusablesStep", "NFKCStep", "UnicodeConfig", "UnicodeStep"]


@dataclass(frozen=True, slots=True)
class UnicodeConfig:
    """What the Unicode steps do. Each action is one of block / redact (remove or rewrite) / flag;
    ``None`` turns that check off.

    Defaults: hidden characters of every kind are removed (REDACT), text is NFKC-normalised,
    homoglyphs in mixed-script words are rewritten to the Latin letters they imitate (REDACT), and
    words written entirely in look-alike letters inside Latin text are flagged.
    """

    control: Action | None = Action.REDACT
    invisible: Action | None = Action.REDACT
    bidi: Action | None = Action.REDACT
    tags: Action | None = Action.REDACT
    variation_selectors: Action | None = Action.REDACT
    nfkc: bool = True
    homoglyphs: Action | None = Action.REDACT
    whole_script_homoglyphs: Action | None = Action.FLAG

    def __post_init__(self) -> None:
        for name in (
            "control",
            "invisible",
            "bidi",
            "tags",
            "variation_selectors",
            "homoglyphs",
            "whole_script_homoglyphs",
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Action):
                raise UsageError(f"UnicodeConfig.{name} must be an Action or None, got {value!r}")


# Default_Ignorable_Code_Point (Unicode 15.1 DerivedCoreProperties.txt), the other Cf characters,
# the controls other than \t \n \r, and U+2800 BRAILLE PATTERN BLANK (a symbol that renders as
# nothing, like the Hangul fillers: used to split words). A test checks every Cf and Cc code point
# is covered.
_HIDDEN: Final = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb"
    "\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
_BLACK_FLAG: Final = "\U0001f3f4"
_TAG_END: Final = "\U000e007f"
#: the tag sequences of the subdivision flags Unicode recommends for general interchange (RGI:
#: emoji-sequences.txt lists England, Scotland and Wales). Any other sequence renders as a plain
#: black flag and carries up to six hidden letters a flag ("🏴"+tags("ignore")+cancel was kept
#: before outside review 14): an allowlist, not a shape
_FLAG_TAGS: Final = frozenset(
    "".join(chr(0xE0000 + ord(c)) for c in code) + _TAG_END for code in ("gbeng", "gbsct", "gbwls")
)


def _settled(char: str) -> str:
    """``char`` as NFKC leaves it (never empty: NFKC maps no character to nothing)."""
    return char if char.isascii() else unicodedata.normalize("NFKC", char) or char


def _kind(char: str) -> str:
    cp = ord(char)
    if 0x202A <= cp <= 0x202E or 0x2066 <= cp <= 0x2069:
        return "bidi"
    if 0xE0000 <= cp <= 0xE007F:
        return "tags"
    if 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF or 0x180B <= cp <= 0x180D or cp == 0x180F:
        return "variation_selectors"
    if cp < 0xA0:
        return "control"
    return "invisible"


_RULES: Final = {
    "bidi": ("unicode.bidi", "bidirectional embedding/override/isolate control"),
    "tags": ("unicode.tag", "Unicode tag characters (hidden ASCII)"),
    "variation_selectors": (
        "unicode.variation-selector",
        "variation selectors not attached to one visible character",
    ),
    "control": ("unicode.control", "control characters"),
    "invisible": ("unicode.invisible", "invisible (default-ignorable or format) characters"),
}


#: scripts whose words never need a joiner: a ZWJ/ZWNJ inside them only splits a word (to slip a
#: keyword past a filter)
_NO_JOINERS: Final = frozenset({"LATIN", "CYRILLIC", "GREEK", "COMMON", "INHERITED"})
#: what may stand before a ZWJ in an emoji sequence besides a pictograph: VS16 and skin tones
_EMOJI_TAIL: Final = re.compile("[\ufe0f\U0001f3fb-\U0001f3ff]")


def _joins(before: str, after: str) -> bool:
    """A zero-width joiner or non-joiner doing its job: inside an emoji sequence, or between two
    letters (or a letter and a combining mark such as a virama) of a script that uses joiners
    (Arabic, Persian, Indic, ...)."""
    if not before or not after:
        return False
    if unicodedata.category(after) == "So" and (
        unicodedata.category(before) == "So" or _EMOJI_TAIL.match(before)
    ):
        return True
    letters = all(c.isalpha() or unicodedata.category(c) in ("Mn", "Mc") for c in (before, after))
    return letters and _script(before) not in _NO_JOINERS and _script(after) not in _NO_JOINERS


class UnicodeStep:
    """Find hidden characters; remove, refuse or flag them as configured."""

    name = "unicode"

    def __init__(self, config: UnicodeConfig) -> None:
        self.config = config

    def _allowed(self, text: str, start: int, end: int, kind: str) -> bool:
        """The legitimate uses listed in the module docstring, judged on the neighbours as NFKC
        leaves them: the ``nfkc`` step runs after this one, and a selector kept after a fullwidth
        ``ａ`` stood after an ASCII ``a`` once normalised (one selector after each letter smuggled a
        byte a letter and split e-mail addresses past the ``pii`` step: outside review 14)."""
        before = _settled(text[start - 1])[-1:] if start > 0 else ""
        after = _settled(text[end])[:1] if end < len(text) else ""
        if kind == "variation_selectors":
            if end - start != 1 or not before or _HIDDEN.match(before) or before.isspace():
                return False
            selector = text[start]
            if selector in "\ufe0e\ufe0f":  # text/emoji presentation: emoji, keycaps (1️⃣)
                return not before.isascii() or before in "0123456789#*"
            if selector < "\U000e0100":  # FE00-FE0D, Mongolian FVS: variants of non-ASCII characters
                return not before.isascii()
            return _script(before) == "HAN"  # ideographic variation sequences (U+E0100-E01EF)
        if kind == "invisible" and end - start == 1 and text[start] in "\u200c\u200d":
            return _joins(before, after)
        if kind == "tags" and before == _BLACK_FLAG:
            return text[start:end] in _FLAG_TAGS
        return False

    def check(self, text: str) -> StepReport:
        if text.isascii() and text.isprintable():
            return EMPTY
        hits: list[Hit] = []
        position = 0
        while (match := _HIDDEN.search(text, position)) is not None:
            start = match.start()
            kind = _kind(text[start])
            end = start + 1
            while end < len(text) and _HIDDEN.match(text, end) and _kind(text[end]) == kind:
                end += 1
            position = end
            action = getattr(self.config, kind)
            if action is None or self._allowed(text, start, end, kind):
                continue
            rule, what = _RULES[kind]
            first = ord(text[start])
            hits.append(Hit(rule, f"{end - start} {what}, first U+{first:04X}", start, end, action))
        return StepReport(tuple(hits))


_NON_ASCII_RUN: Final = re.compile(r"[^\x00-\x7f]+")


class NFKCStep:
    """NFKC normalisation as rewrites (not findings), one per changed run of non-ASCII characters.

    ASCII characters are unchanged by NFKC and never the second half of a composition, so each
    maximal non-ASCII run together with the character before it normalises on its own: the joined
    result equals NFKC of the whole text. Within a run each character with the marks that follow it
    is rewritten on its own wherever that gives the same result, so that a finding in the output
    maps back to exactly its characters: one rewrite per run made ``ｍａｉｌ　ａ@ｂ.ｃｏｍ``'s address
    start at the ``ｍ`` and every fullwidth word's span take in the character before it (outside
    review 14).
    """

    name = "nfkc"

    def check(self, text: str) -> StepReport:
        if text.isascii() or unicodedata.is_normalized("NFKC", text):
            return EMPTY
        edits: list[Edit] = []
        for match in _NON_ASCII_RUN.finditer(text):
            start = max(match.start() - 1, 0)
            piece = text[start : match.end()]
            normal = unicodedata.normalize("NFKC", piece)
            if normal != piece:
                edits.extend(_segment_edits(piece, normal, start))
        return StepReport(edits=tuple(edits))


def _segment_edits(piece: str, normal: str, offset: int) -> list[Edit]:
    """The rewrites of ``piece`` (at ``offset``) whose result is ``normal``: one per character and the
    combining marks after it, where NFKC of those pieces joined is ``normal``; else one for all."""
    bounds = [0] + [i for i in range(1, len(piece)) if not unicodedata.combining(piece[i])]
    bounds.append(len(piece))
    parts = [
        (bounds[k], bounds[k + 1], unicodedata.normalize("NFKC", piece[bounds[k] : bounds[k + 1]]))
        for k in range(len(bounds) - 1)
    ]
    if "".join(p[2] for p in parts) != normal:  # a composition across characters (Hangul jamo, ...)
        return [Edit(offset, offset + len(piece), normal)]
    return [Edit(offset + a, offset + b, out) for a, b, out in parts if out != piece[a:b]]


@lru_cache(maxsize=1)
def _latin_lookalikes() -> dict[str, str]:
    """Non-Latin letter -> the ASCII letter it imitates, from the Unicode confusables data that the
    ``confusable-homoglyphs`` package ships (its confusables.json, built from Unicode's
    confusables.txt). Read once, without the package's own module-level loading."""
    import json
    from importlib import resources

    data = json.loads(
        resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    )
    table: dict[str, str] = {}
    for char, entries in data.items():
        if len(char) != 1 or char.isascii() or not char.isalpha():
            continue
        for entry in entries:
            target = entry.get("c", "")
            if len(target) == 1 and target.isascii() and target.isalpha():
                table[char] = target
                break
    return table


def _script(char: str) -> str:
    from confusable_homoglyphs.categories import alias

    return str(alias(char))


_WORD: Final = re.compile(r"\w+")
_LATIN_WORD: Final = re.compile(r"[A-Za-z]{2,}")


class ConfusablesStep:
    """Homoglyph tricks: a word mixing Latin letters with letters of another script that look like
    Latin ones ("pаypal" with a Cyrillic а) is rewritten to the Latin it imitates
    (``unicode.homoglyph``); a word of another script made only of look-alikes, in a text that
    also has Latin words, is ``unicode.whole-script-homoglyph``."""

    name = "confusables"

    def __init__(self, config: UnicodeConfig) -> None:
        self.config = config

    def check(self, text: str) -> StepReport:
        if text.isascii():
            return EMPTY
        lookalikes = _latin_lookalikes()
        hits: list[Hit] = []
        latin_context: bool | None = None
        for match in _WORD.finditer(text):
            word = match.group(0)
            if word.isascii():
                continue
            letters = [c for c in word if c.isalpha()]
            latin = [c for c in letters if c.isascii()]
            foreign = [c for c in letters if not c.isascii() and c in lookalikes and _script(c) != "LATIN"]
            if not foreign:
                continue
            imitators = frozenset(foreign)  # membership per character: a list made a word quadratic
            scripts = sorted({_script(c) for c in imitators})
            if latin and self.config.homoglyphs is not None:
                fixed = "".join(lookalikes[c] if c in imitators else c for c in word)
                reason = f"mixed-script word: {len(foreign)} {'/'.join(scripts)} letters imitate Latin"
                hits.append(
                    Hit(
                        "unicode.homoglyph", reason, match.start(), match.end(), self.config.homoglyphs, fixed
                    )
                )
            elif (
                not latin
                and len(foreign) == len(letters) >= 3
                and self.config.whole_script_homoglyphs is not None
            ):
                if latin_context is None:
                    latin_context = _LATIN_WORD.search(text) is not None
                if latin_context:
                    fixed = "".join(lookalikes[c] for c in word) if word.isalpha() else word
                    reason = f"word of {'/'.join(scripts)} letters that all imitate Latin, in Latin text"
                    hits.append(
                        Hit(
                            "unicode.whole-script-homoglyph",
                            reason,
                            match.start(),
                            match.end(),
                            self.config.whole_script_homoglyphs,
                            fixed,
                        )
                    )
        return StepReport(tuple(hits))
