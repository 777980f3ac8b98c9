"""Deterministic mutations of an attack payload: encodings, obfuscations, payload splitting.

Every function takes the payload and a :class:`random.Random` seeded by the caller from ``--seed``
(never the global generator), so the same seed gives the same prompts. Words that must reach the
model intact (the action token) are passed as ``keep`` and left unchanged by the obfuscations.
"""

from __future__ import annotations

import base64
import codecs
import random
from collections.abc import Callable
from typing import Final

__all__ = ["MUTATORS", "base64_wrap", "homoglyphs", "leetspeak", "rot13", "split_payload", "zero_width"]

#: Latin letters and the Cyrillic letters Unicode's confusables.txt lists as their look-alikes
_HOMOGLYPHS: Final = {
    "a": "\u0430", "c": "\u0441", "e": "\u0435", "i": "\u0456", "o": "\u043e",
    "p": "\u0440", "x": "\u0445", "y": "\u0443", "s": "\u0455", "j": "\u0458",
}  # fmt: skip
_LEET: Final = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "g": "9", "b": "8"}
#: zero width space, zero width non-joiner, zero width joiner, word joiner
_ZERO_WIDTH: Final = ("\u200b", "\u200c", "\u200d", "\u2060")


def _words(text: str, keep: frozenset[str], change: Callable[[str], str]) -> str:
    """Apply ``change`` to every space-separated word of ``text`` except those in ``keep``."""
    out = []
    for word in text.split(" "):
        bare = word.strip(".,:;!?'\"")
        out.append(word if bare in keep or not bare else change(word))
    return " ".join(out)


def base64_wrap(payload: str, rng: random.Random, keep: frozenset[str] = frozenset()) -> str:
    del rng, keep  # the encoding hides every word, the token included: the model must decode it
    return base64.b64encode(payload.encode("utf-8")).decode("ascii")


def rot13(payload: str, rng: random.Random, keep: frozenset[str] = frozenset()) -> str:
    del rng, keep
    return codecs.encode(payload, "rot13")


def leetspeak(payload: str, rng: random.Random, keep: frozenset[str] = frozenset()) -> str:
    """Each mappable letter is replaced with probability 0.6 (so the text stays readable)."""

    def change(word: str) -> str:
        return "".join(_LEET[c.lower()] if c.lower() in _LEET and rng.random() < 0.6 else c for c in word)

    return _words(payload, keep, change)


def homoglyphs(payload: str, rng: random.Random, keep: frozenset[str] = frozenset()) -> str:
    """Lower-case Latin letters with a Cyrillic look-alike are swapped with probability 0.5."""

    def change(word: str) -> str:
        return "".join(_HOMOGLYPHS[c] if c in _HOMOGLYPHS and rng.random() < 0.5 else c for c in word)

    return _words(payload, keep, change)


def zero_width(payload: str, rng: random.Random, keep: frozenset[str] = frozenset()) -> str:
    """An invisible character after one letter in two of every word of 3+ letters (keywords split)."""

    def change(word: str) -> str:
        if len(word) < 3:
            return word
        out = []
        for index, c in enumerate(word):
            out.append(c)
            if index < len(word) - 1 and rng.random() < 0.5:
                out.append(rng.choice(_ZERO_WIDTH))
        return "".join(out)

    return _words(payload, keep, change)


def split_payload(payload: str, rng: random.Random, parts: int = 3) -> tuple[str, ...]:
    """``payload`` cut at word boundaries into ``parts`` non-empty pieces (fewer for short texts);
    joined back with no separator they give ``payload`` exactly."""
    spaces = [i for i, c in enumerate(payload) if c == " "]
    count = min(parts - 1, len(spaces))
    cuts = sorted(rng.sample(spaces, count)) if count else []
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(payload[start:cut])
        start = cut
    pieces.append(payload[start:])
    return tuple(pieces)


MUTATORS: Final[dict[str, Callable[[str, random.Random, frozenset[str]], str]]] = {
    "base64": base64_wrap,
    "rot13": rot13,
    "leetspeak": leetspeak,
    "homoglyphs": homoglyphs,
    "zero-width": zero_width,
}
