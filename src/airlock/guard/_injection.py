"""Prompt-injection detection: a small linear model trained by this project, run in pure Python.

The model (``data/injection_v1.json``, written by ``tools/train_guard.py`` from the S-Labs and
neuralchemy train/validation splits only) is a logistic regression over three blocks of features:

* **words**: unigrams and bigrams of the normalised text, sublinear tf * idf, L2-normalised;
* **chars**: presence of 4-grams of the de-obfuscated word stream (leetspeak undone, spaced-out
  letters joined, Latin lookalikes mapped), idf-weighted, L2-normalised: robust to ``1gn0re`` and
  ``i g n o r e``;
* **structure**: a fixed, hand-written set of patterns for the *shape* of an attack rather than its
  topic: an override verb aimed at the model's instructions, a request to disclose the system prompt,
  persona switches towards "no restrictions", fake role / delimiter tags, refusal suppression,
  exfiltration to a URL or address, claimed authority, decode-and-follow.

A text is flagged when its probability reaches ``threshold`` if an attack structure matched, or the
stricter ``threshold_unstructured`` if none did (both chosen on the validation splits for a stated
false-positive rate, see docs). Inference is a dictionary lookup per feature and one sparse dot product: no numpy, scipy or
scikit-learn (a test pins that). Long texts are scored in overlapping windows and the highest window
wins, so benign padding cannot dilute an embedded attack.

Security assumptions (each relied on below):

* The weights file ships inside the package; it is still read with a size bound, parsed by the strict
  JSON parser and checked for shape and finiteness before use (a truncated or edited file is an
  :class:`~airlock.errors.IntegrityError`, never a silently weaker detector).
* The text is untrusted: it is only normalised, matched by linear-time-safe regular expressions with
  bounded repetition, and looked up in dictionaries. Its length is bounded by :data:`MAX_CHARS`.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError, IntegrityError, LimitError

__all__ = [
    "MAX_CHARS",
    "STRUCTURES",
    "WEIGHTS_FORMAT",
    "Detector",
    "InjectionScore",
    "detector",
    "featurize",
    "load_detector",
    "read_shipped_weights",
]

WEIGHTS_FORMAT: Final = "airlock-injection-v1"
WEIGHTS_RESOURCE: Final = "injection_v1.json"
#: The shipped file is ~1 MB; anything past this bound is refused before it is read whole.
MAX_WEIGHTS_BYTES: Final = 16 * 1024 * 1024
MAX_VOCAB: Final = 500_000
#: Longest text scored (characters, after NFKC). Longer input is a LimitError: the guard's size
#: validation step should have refused it earlier.
MAX_CHARS: Final = 262_144
#: Texts up to WINDOW characters are scored whole; longer ones in windows of WINDOW, step STRIDE.
WINDOW: Final = 2048
STRIDE: Final = 1024
#: At most this many reasons are reported.
MAX_REASONS: Final = 3

# --- normalisation ---------------------------------------------------------------------------------

_LEET: Final = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# Runs of >= 4 single characters separated by one separator: "i g n o r e", "i.g.n.o.r.e".
_SPACED: Final = re.compile(r"(?<![^\W_])(?:[^\W_][ .\-_*\\|/]){3,}[^\W_](?![^\W_])")
_SPACED_SEP: Final = re.compile(r"[ .\-_*\\|/]")
# Latin lookalikes from other scripts (a small, fixed subset of Unicode's confusables), undone only
# inside words that also hold ASCII letters: "rеmоtе" with Cyrillic е/о becomes "remote", while
# a word wholly in Cyrillic or Greek is left alone.
_CONFUSABLE: Final = str.maketrans(
    "абвгдежзийклмнопрстуфхцчшщъыьэюяѕіјԁɡαβγδεζηθικλμνξοπρστυφχψω€",
    "abvgdezziiklmnoprstufhccssjyjeuysijdgabgdezhtiklmnxoprstufxpwe",
)
_MIXED: Final = re.compile(r"[^\W_]*[a-z][^\W_]*")
_WS: Final = re.compile(r"\s+")
_WORD: Final = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def _join_spaced(match: re.Match[str]) -> str:
    return _SPACED_SEP.sub("", match.group())


def _unconfuse(match: re.Match[str]) -> str:
    word = match.group()
    return word if word.isascii() else word.translate(_CONFUSABLE)


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    if not text.isascii():
        text = _MIXED.sub(_unconfuse, text)
    # Join spaced-out letters before collapsing whitespace: "i g n o r e   a l l" -> "ignore   all".
    text = _SPACED.sub(_join_spaced, text)
    return _WS.sub(" ", text)


# --- structure patterns ----------------------------------------------------------------------------
# Each pattern runs on the normalised (casefolded) text. Repetitions are bounded ({0,n}) and built
# from disjoint classes so matching stays linear in the text length.

_OVERRIDE_VERB: Final = (
    r"(?:ignore|ignoring|disregard|forget|override|overrule|bypass|abandon|discard|dismiss|neglect"
    r"|set aside|throw out|stop following|do not follow|don't follow|no longer follow|cancel|erase"
    r"|delete|drop|skip|violate|break)"
)
_INSTR_NOUN: Final = (
    r"(?:instructions?|prompts?|rules|directives?|guidelines|constraints|restrictions|programming|commands"
    r"|policies|policy|guardrails|safeguards|filters|training|system message|prior context|limitations"
    r"|boundaries|protocols?|ethics|principles|orders|safety|content policy|previous (?:messages?|context)"
    r"|everything (?:above|before|you were told|else))"
)
_PRIOR: Final = (
    r"(?:previous|prior|above|earlier|preceding|initial|original|system|old|existing|default|safety"
    r"|pre-?programmed|developer|your|all|any|the|these|those|my|its|every)"
)
_WORDGAP: Final = r"(?:[^\W_]+[^\w]{1,3}){0,4}"
_REVEAL: Final = (
    r"(?:reveal|show|print|display|output|repeat|tell|give|leak|dump|share|list|expose|disclose|write out"
    r"|recite|spell out|quote|copy|paste|return|provide|echo|what (?:is|are|was|were))"
)
_HIDDEN_OBJECT: Final = (
    r"(?:system|initial|hidden|secret|original|internal|developer|confidential|pre-?prompt|base|full"
    r"|exact|underlying|configuration)\W{1,3}(?:prompt|instructions?|message|rules|configuration|guidelines"
    r"|directives|text|setup)"
)

_OVERRIDE_TRIGGERS: Final = (
    "ignor",
    "disregard",
    "forget",
    "overr",
    "bypass",
    "abandon",
    "discard",
    "dismiss",
    "neglect",
    "aside",
    "throw out",
    "follow",
    "cancel",
    "erase",
    "delete",
    "drop",
    "skip",
    "violat",
    "break",
)

#: (name, human-readable reason, pattern, triggers). The pattern is only run when one of the
#: trigger substrings occurs in the normalised text (an empty tuple: always run); every string the
#: pattern can match contains one of them, so the gate only saves time. The trained weights name
#: these in order; a mismatch is an IntegrityError at load time.
STRUCTURES: Final[tuple[tuple[str, str, str, tuple[str, ...]], ...]] = (
    (
        "override_prior",
        "instruction override aimed at prior instructions",
        rf"\b{_OVERRIDE_VERB}\W{{1,3}}(?:{_PRIOR}\W{{1,3}}){{1,3}}{_WORDGAP}{_INSTR_NOUN}\b",
        _OVERRIDE_TRIGGERS,
    ),
    (
        "override_any",
        "override verb near instruction words",
        rf"\b{_OVERRIDE_VERB}\b\W{{1,3}}{_WORDGAP}{_INSTR_NOUN}\b",
        _OVERRIDE_TRIGGERS,
    ),
    (
        "reveal_system",
        "request to disclose the system prompt or hidden instructions",
        rf"\b{_REVEAL}\b\W{{1,3}}{_WORDGAP}(?:your|the|its|my|any|all)\W{{1,3}}{_WORDGAP}{_HIDDEN_OBJECT}\b"
        r"|\b(?:repeat|print|output|copy|recite)\W{1,3}(?:all|everything|the (?:text|words|lines?))\W{1,3}"
        r"(?:above|before|preceding|prior)\b"
        r"|\bverbatim\b.{0,40}\b(?:prompt|instructions|above)\b|\b(?:prompt|instructions)\b.{0,40}\bverbatim\b",
        (
            "prompt",
            "instruction",
            "message",
            "rules",
            "configuration",
            "guidelines",
            "directive",
            "text",
            "setup",
            "above",
            "before",
            "preceding",
            "prior",
            "verbatim",
        ),
    ),
    (
        "persona_unrestricted",
        "persona switch to an unrestricted model",
        r"\b(?:unrestricted|unfiltered|uncensored|jailbroken|jailbreak|amoral|dan|do anything now"
        r"|developer mode|god mode|dev mode|evil (?:twin|mode|ai|assistant|confidant))\b"
        r"|\b(?:no|without|free of|free from|not bound by|any)\W{1,3}(?:[^\W_]+\W{1,3}){0,2}"
        r"(?:restrictions|limits|limitations|filters|rules|guidelines|censorship|ethics|morals|boundaries"
        r"|policies|guardrails|content polic(?:y|ies)|safety (?:rules|guidelines|filters))\b",
        (
            "unrestrict",
            "unfilter",
            "uncensor",
            "jailbr",
            "amoral",
            "dan",
            "anything now",
            "mode",
            "evil",
            "no ",
            "without",
            "free ",
            "bound",
            "any ",
        ),
    ),
    (
        "persona_switch",
        "persona / role switch",
        r"\b(?:you are now|you're now|you are no longer|from now on,? you|pretend (?:to be|you are|you're)"
        r"|role-?play as|you will (?:now )?(?:act|behave|respond|answer) as|stay in character"
        r"|act as (?:if|though) you|simulate (?:an?|the) (?:ai|assistant|model|chatbot))\b",
        ("you are", "you're", "pretend", "role", "you will", "character", "act as", "simulate"),
    ),
    (
        "fake_delimiter",
        "fake role or delimiter tag",
        r"<\|?\s*/?\s*(?:im_start|im_end|system|endoftext|assistant|user|sys)\s*\|?>|\[/?inst\]|<<\s*/?sys\s*>>"
        r"|</?(?:system|instructions?|admin|developer)>|\[(?:system|admin|developer)(?: (?:message|note|override"
        r"|prompt))?\]|(?:^|[\n.!?#\]}>-]\s{0,3})(?:system|admin|developer|assistant)\s?(?:message|prompt|override"
        r"|note)?\s?:|#{2,}\s?(?:system|instructions?|new instructions?|admin|end)|\bend of (?:user input"
        r"|input|document|context|prompt|conversation)\b|\}\}|\]\]",
        ("<", "[", "#", ":", "}}", "]]", "end of"),
    ),
    (
        "new_instructions",
        "new instructions replace the task",
        r"\b(?:new|updated|real|actual|true|revised|secret|hidden|additional)\W{1,3}(?:instructions?|task|directives?"
        r"|rules|objective|goal|prompt|system prompt)\W{0,3}(?::|-|is|are)"
        r"|\binstead,?\W{1,3}(?:you (?:will|should|must)|say|print|output|respond|reply|write|answer)\b"
        r"|\byour (?:new|real|true|only) (?:task|goal|purpose|instructions?|job|role)\b",
        (
            "new",
            "updated",
            "real",
            "actual",
            "true",
            "revised",
            "secret",
            "hidden",
            "additional",
            "instead",
            "your ",
        ),
    ),
    (
        "refusal_suppression",
        "refusal suppression",
        r"\b(?:(?:do not|don't|never|must not|cannot|can't|won't|will not) (?:ever )?(?:refuse|decline|say no"
        r"|apologi[sz]e|warn|mention|add|include) ?(?:any )?(?:warnings?|disclaimers?|that you|ethic[a-z]*)?"
        r"|must (?:always )?(?:comply|answer|obey)|without (?:any )?(?:warnings?|disclaimers?|censorship"
        r"|refusals?|moral[a-z]*|hesitation))\b",
        ("not", "n't", "never", "must", "without"),
    ),
    (
        "exfiltration",
        "exfiltration to a URL, address or image link",
        r"!\[[^\]]{0,200}\]\(\s*https?://[^)\s]{0,300}[?&=]"
        r"|\b(?:send|post|forward|email|upload|transmit|exfiltrate|leak|append|include)\b(?:\W{1,3}[^\W_]+){0,8}"
        r"\W{1,3}(?:to|at|in)\W{1,3}(?:https?://|www\.|[\w.+-]{1,64}@[\w-]{1,63}\.)"
        r"|\b(?:api[ _-]?keys?|passwords?|credentials|secret keys?|access tokens?|private keys?|environment"
        r" variables|conversation history|chat history|context window)\b",
        (
            "![",
            "send",
            "post",
            "forward",
            "email",
            "upload",
            "transmit",
            "exfiltr",
            "leak",
            "append",
            "include",
            "api",
            "password",
            "credential",
            "secret",
            "token",
            "private key",
            "environment",
            "history",
            "context window",
        ),
    ),
    (
        "claimed_authority",
        "claimed authority or privileged mode",
        r"\b(?:i am|i'm|this is|as) (?:your|the|an?) (?:developer|creator|admin|administrator|owner|system"
        r" administrator|operator|maintainer)\b|\b(?:admin|developer|sudo|root|maintenance|debug|god)"
        r" (?:mode|access|override|privileges|rights|command)\b|\bi (?:authori[sz]e|command|order) you\b",
        (
            "i am",
            "i'm",
            "this is",
            "as ",
            "mode",
            "access",
            "override",
            "privilege",
            "rights",
            "command",
            "authori",
            "order you",
        ),
    ),
    (
        "model_internals",
        "asks about the model's own prompt, rules or configuration",
        r"\byour\W{1,3}(?:[^\W_]+\W{1,3}){0,2}(?:prompt|system prompt|rules|guidelines|instructions|configuration"
        r"|config|initiali[sz]ation|programming|directives|training data|constraints|restrictions|setup|settings"
        r"|policies|filters|guardrails|safety (?:rules|settings|filters)|context window|hidden|secret|internal)\b",
        ("your",),
    ),
    (
        "forced_output",
        "dictates the exact output",
        r"\b(?:say|print|output|respond with|reply with|return|write|answer with|type|repeat after me)\W{1,3}"
        r"(?:only\W{1,3}|exactly\W{1,3}|just\W{1,3}|nothing but\W{1,3}|the (?:word|phrase|text|string)\W{1,3}){0,2}"
        r"[\"'\u201c\u2018`]",
        (
            "say",
            "print",
            "output",
            "respond with",
            "reply with",
            "return",
            "write",
            "answer with",
            "type",
            "repeat",
            "pwned",
        ),
    ),
    (
        "decode_and_follow",
        "decode-and-follow instruction",
        r"\b(?:decode|decrypt|deobfuscate|unscramble|reverse)\b.{0,80}\b(?:follow|execute|run|obey|perform|do what)",
        ("decod", "decrypt", "deobfuscat", "unscrambl", "revers"),
    ),
    (
        "encoded_blob",
        "long base64-like run",
        r"(?<![a-z0-9+/])[a-z0-9+/]{28,}={0,2}",
        (),
    ),
)
_INSTR_NOUN_TRIGGERS: Final = (
    "instruction",
    "prompt",
    "rule",
    "directive",
    "guideline",
    "constraint",
    "restriction",
    "programming",
    "command",
    "polic",
    "guardrail",
    "safeguard",
    "filter",
    "training",
    "system message",
    "context",
    "limitation",
    "boundar",
    "protocol",
    "ethic",
    "principle",
    "order",
    "safety",
    "previous",
    "everything",
)
#: Second gate: these patterns also need one of these substrings (every match holds one: the
#: instruction nouns of _INSTR_NOUN; the follow-verbs of decode_and_follow).
_ALSO_NEEDS: Final[dict[str, tuple[str, ...]]] = {
    "override_prior": _INSTR_NOUN_TRIGGERS,
    "override_any": _INSTR_NOUN_TRIGGERS,
    "decode_and_follow": ("follow", "execute", "run", "obey", "perform", "do what"),
}
_STRUCT_RE: Final = tuple(
    (re.compile(pattern), triggers, _ALSO_NEEDS.get(name, ())) for name, _, pattern, triggers in STRUCTURES
)
STRUCT_NAMES: Final = tuple(name for name, _, _, _ in STRUCTURES)
_STRUCT_REASON: Final = {name: reason for name, reason, _, _ in STRUCTURES}


@dataclass(frozen=True, slots=True)
class Features:
    """Raw counts of one window of text (before idf weighting)."""

    words: Counter[str]
    chars: frozenset[str]
    structure: tuple[bool, ...]


def _char_grams(tokens: list[str]) -> frozenset[str]:
    # 4-grams of the word stream with leetspeak undone (grams may span one space between words);
    # presence only (binary tf): cheaper than counting, and repetition says little at this level.
    s = f" {' '.join(tokens).translate(_LEET)} "
    return frozenset(map("".join, zip(s, s[1:], s[2:], s[3:], strict=False)))


def _has(norm: str, triggers: tuple[str, ...]) -> bool:
    if not triggers:
        return True
    return any(t in norm for t in triggers)


def featurize(text: str) -> Features:
    """Counts of word 1-2-grams, char 4-grams and the structure flags of ``text`` (one window)."""
    norm = _normalise(text)
    tokens = _WORD.findall(norm)
    words: Counter[str] = Counter(tokens)
    words.update(f"{a} {b}" for a, b in itertools.pairwise(tokens))
    chars = _char_grams(tokens)
    structure = tuple(
        _has(norm, trig) and _has(norm, also) and pattern.search(norm) is not None
        for pattern, trig, also in _STRUCT_RE
    )
    return Features(words, chars, structure)


# --- the model -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InjectionScore:
    """The detector's verdict on one text.

    ``score`` is the model's probability of an injection (0..1); ``flagged`` is ``score >=
    threshold``, where ``threshold`` is the detector's threshold for texts with a matched attack
    structure, or its stricter one for texts without; ``reasons`` names at most :data:`MAX_REASONS` of the strongest contributions
    towards "injection" (structures first, then word n-grams), never the text itself beyond them.
    """

    score: float
    threshold: float
    flagged: bool
    reasons: tuple[str, ...]
    #: True when one of the hand-written attack structures matched (the lower threshold applies).
    structured: bool = False


class _Block:
    """One block of n-gram features: feature -> (idf, coefficient)."""

    __slots__ = ("idf_coef", "idf_sq", "keys", "weights")

    def __init__(self, weights: dict[str, tuple[float, float]]) -> None:
        self.weights = weights
        # frozenset & frozenset iterates the smaller side in C (the text's n-grams, not the
        # vocabulary); dict_keys & frozenset would iterate the vocabulary.
        self.keys = frozenset(weights)
        # for presence features: per-feature idf^2 and idf*coef, summed by map() in C
        self.idf_sq = {f: i * i for f, (i, _) in weights.items()}
        self.idf_coef = {f: i * c for f, (i, c) in weights.items()}

    def contributions(self, counts: Counter[str]) -> tuple[float, list[tuple[float, str]]]:
        """Sum of sublinear-tf x idf x coef, L2-normalised over the known features; and the parts."""
        weights = self.weights
        hits = [f for f in counts if f in weights]
        if not hits:
            return 0.0, []
        values = []
        sq = 0.0
        for feature in hits:
            idf, coef = weights[feature]
            tf = counts[feature]
            value = idf if tf == 1 else (1.0 + math.log(tf)) * idf
            sq += value * value
            values.append((value * coef, feature))
        inv = 1.0 / math.sqrt(sq)
        parts = [(v * inv, f) for v, f in values]
        return sum(v for v, _ in values) * inv, parts

    def binary_sum(self, present: frozenset[str]) -> float:
        """Sum for presence features (tf = 1): idf-weighted, L2-normalised over the known ones."""
        hits = present & self.keys
        if not hits:
            return 0.0
        sq = sum(map(self.idf_sq.__getitem__, hits))
        return sum(map(self.idf_coef.__getitem__, hits)) / math.sqrt(sq)


class Detector:
    """A loaded prompt-injection model. Build with :func:`detector` (shipped weights)."""

    def __init__(
        self,
        *,
        words: dict[str, tuple[float, float]],
        chars: dict[str, tuple[float, float]],
        structure: tuple[float, ...],
        bias: float,
        threshold: float,
        threshold_unstructured: float,
        meta: dict[str, Any],
    ) -> None:
        if len(structure) != len(STRUCTURES):
            raise IntegrityError(
                f"injection weights: {len(structure)} structure weights, expected {len(STRUCTURES)}"
            )
        self._words = _Block(words)
        self._chars = _Block(chars)
        self._structure = structure
        self._bias = bias
        self.threshold = threshold
        self.threshold_unstructured = threshold_unstructured
        self.meta = meta

    @property
    def shape(self) -> tuple[int, int, int]:
        """(word features, char features, structure features)."""
        return len(self._words.weights), len(self._chars.weights), len(self._structure)

    def _logit(self, feats: Features) -> tuple[float, list[tuple[float, str]]]:
        w_sum, w_parts = self._words.contributions(feats.words)
        c_sum = self._chars.binary_sum(feats.chars)
        reasons: list[tuple[float, str]] = []
        s_sum = 0.0
        for name, present, coef in zip(STRUCT_NAMES, feats.structure, self._structure, strict=True):
            if present:
                s_sum += coef
                if coef > 0:
                    # Structures outrank word n-grams in the reasons: they say *why*, not *which word*.
                    reasons.append((coef + 100.0, _STRUCT_REASON[name]))
        reasons.extend((p, f'words "{f}"') for p, f in w_parts if p > 0.05)
        return self._bias + w_sum + c_sum + s_sum, reasons

    def score(self, text: str) -> InjectionScore:
        """Score one untrusted text. Raises :class:`~airlock.errors.LimitError` past :data:`MAX_CHARS`."""
        if len(text) > MAX_CHARS:
            raise LimitError(f"injection detector: text of {len(text)} characters exceeds {MAX_CHARS}")
        if len(text) <= WINDOW:
            windows = [text]
        else:
            last = len(text) - WINDOW
            starts = [*range(0, last, STRIDE), last]
            windows = [text[s : s + WINDOW] for s in starts]
        best: InjectionScore | None = None
        for window in windows:
            feats = featurize(window)
            logit, reasons = self._logit(feats)
            prob = _sigmoid(logit)
            structured = any(feats.structure)
            threshold = self.threshold if structured else self.threshold_unstructured
            if best is not None and (best.flagged, best.score) >= (prob >= threshold, prob):
                continue
            reasons.sort(key=lambda r: -r[0])
            best = InjectionScore(
                score=prob,
                threshold=threshold,
                flagged=prob >= threshold,
                reasons=tuple(reason for _, reason in reasons[:MAX_REASONS]),
                structured=structured,
            )
        assert best is not None
        return best


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# --- loading ---------------------------------------------------------------------------------------


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise IntegrityError(f"injection weights: {what} is not a finite number")
    return float(value)


def _block(doc: dict[str, Any], name: str) -> dict[str, tuple[float, float]]:
    block = doc.get(name)
    if not isinstance(block, dict) or set(block) != {"features", "idf", "coef"}:
        raise IntegrityError(f"injection weights: block {name!r} must hold features, idf and coef")
    feats, idf, coef = block["features"], block["idf"], block["coef"]
    if not (isinstance(feats, list) and isinstance(idf, list) and isinstance(coef, list)):
        raise IntegrityError(f"injection weights: block {name!r} fields must be lists")
    if not len(feats) == len(idf) == len(coef) or len(feats) > MAX_VOCAB:
        raise IntegrityError(
            f"injection weights: block {name!r} has {len(feats)} features, {len(idf)} idf, {len(coef)} coef"
            f" (equal lengths <= {MAX_VOCAB} expected)"
        )
    out: dict[str, tuple[float, float]] = {}
    for f, i, c in zip(feats, idf, coef, strict=True):
        if not isinstance(f, str) or f in out:
            raise IntegrityError(f"injection weights: block {name!r} has a bad or repeated feature")
        out[f] = (_number(i, f"{name} idf"), _number(c, f"{name} coef"))
    return out


def load_detector(raw: bytes) -> Detector:
    """Build a :class:`Detector` from the bytes of a weights file (bounded, strict, shape-checked)."""
    if len(raw) > MAX_WEIGHTS_BYTES:
        raise IntegrityError(f"injection weights: {len(raw)} bytes exceeds {MAX_WEIGHTS_BYTES}")
    try:
        doc = parse_json_strict(raw, "injection weights")
    except FormatError as exc:
        raise IntegrityError(str(exc)) from exc
    if not isinstance(doc, dict) or doc.get("format") != WEIGHTS_FORMAT:
        raise IntegrityError(f"injection weights: format is not {WEIGHTS_FORMAT!r}")
    names = doc.get("structure_names")
    if names != list(STRUCT_NAMES):
        raise IntegrityError(
            f"injection weights: structure features {names!r} do not match this airlock ({list(STRUCT_NAMES)!r})"
        )
    structure = doc.get("structure_coef")
    if not isinstance(structure, list):
        raise IntegrityError("injection weights: structure_coef must be a list")
    threshold = _number(doc.get("threshold"), "threshold")
    threshold_unstructured = _number(doc.get("threshold_unstructured"), "threshold_unstructured")
    if not 0.0 < threshold <= threshold_unstructured < 1.0:
        raise IntegrityError(
            f"injection weights: thresholds {threshold}, {threshold_unstructured} are not 0 < t <= t_unstructured < 1"
        )
    meta = doc.get("meta")
    return Detector(
        words=_block(doc, "words"),
        chars=_block(doc, "chars"),
        structure=tuple(_number(c, "structure coef") for c in structure),
        bias=_number(doc.get("bias"), "bias"),
        threshold=threshold,
        threshold_unstructured=threshold_unstructured,
        meta=meta if isinstance(meta, dict) else {},
    )


def read_shipped_weights() -> bytes:
    """The bytes of the weights file shipped in ``airlock.guard.data`` (size checked before reading)."""
    ref = resources.files("airlock.guard").joinpath("data", WEIGHTS_RESOURCE)
    try:
        with ref.open("rb") as fh:
            raw = fh.read(MAX_WEIGHTS_BYTES + 1)
    except OSError as exc:
        raise IntegrityError(f"injection weights {WEIGHTS_RESOURCE} cannot be read: {exc}") from exc
    return bytes(raw)


@functools.cache
def detector() -> Detector:
    """The detector with the shipped weights (loaded once per process)."""
    return load_detector(read_shipped_weights())
