"""Feature extraction for the prompt-injection detector: normalisation, n-grams, structure flags.

The text is NFKC-normalised and casefolded; spaced-out letters (``i g n o r e``) are joined; inside
words that mix ASCII with other scripts, Latin lookalikes are mapped back. Then: word unigrams and
bigrams (counts), character 4-grams of the word stream with leetspeak undone (presence), and one flag
per attack structure of :mod:`._injection_patterns`. The words of benign directives ("ignore the
previous formatting") are left out of the n-grams; the structures see the whole text.

Security assumption: the text is untrusted; it is only normalised, matched by the bounded patterns
and split into n-grams. Its length is bounded by the caller (:data:`._injection.MAX_CHARS`).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Final

from airlock.guard._injection_patterns import (
    CLAUSE_OPENING_RE,
    MORE_SHAPES_RE,
    OWNER_FREE_OVERRIDE_RE,
    STRUCT_RE,
    benign_directive_spans,
    has_task_frame,
    reported_at,
)

__all__ = ["Features", "char_stream", "features_of_suffix", "featurize", "grams_of", "normalise"]

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
# Each pattern below that starts with a run (of letters, of whitespace) starts only where the run
# starts: tried from each place inside a run that cannot match (no ASCII letter, no line break),
# it backtracked over the rest of the run every time, quadratic in the run (outside review 7:
# 2,048 characters of "ı" took 44 ms, 2,048 spaces 25 ms; a 256 KiB text 8 s).
_MIXED: Final = re.compile(r"(?<![^\W_])[^\W_]*[a-z][^\W_]*")
_WS: Final = re.compile(r"\s+")
# A plain markup tag ("<p>", "</div>", "<br/>"): not words of the text, so not n-grams and not
# counted towards its length ("<p>Hello</p>" is one word). The structure patterns still see them
# (fake role tags such as "</system>" are an attack shape).
_TAG: Final = re.compile(r"</?[a-z][a-z0-9]{0,15}\s{0,3}/?>")
_WORD: Final = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
# What may close a sentence after its full stop: quotes (straight, curly, guillemets, CJK corner
# brackets), closing brackets, and markdown emphasis or code ("**Can you help?** Ignore ...").
_CLOSERS: Final = r"[\"')\]}”’»›」』）】*_~`]"
# A whitespace run that holds a line break (any of str.splitlines' boundaries).
_WS_NOT_LINE: Final = re.compile(r"[^\S\n]+")
_LINE_BREAK_WS: Final = re.compile(r"(?<!\s)\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")
# The end of a sentence: ., ! or ? (closing quotes or brackets after it) and whitespace; a full stop
# of a script that writes none after it (CJK "。", Devanagari "।", Arabic "؟" / "۔", Ethiopic "።");
# or a line break (kept as "\n" by _normalise_lines). Outside review 6: a preamble ended by a line
# break, "。" or ";" ... was not a sentence, so the suffix pass never judged the attack after it.
# Splitting there removes no word character, so the tokens are those of the whole piece.
_SENTENCE_END: Final = re.compile(rf"[.!?]{_CLOSERS}*\s+|[。।؟۔።]{_CLOSERS}*\s*|\n")
# A clause mark inside a sentence: ":", ";" or "," (closers after it) and spaces, or a dash between
# spaces (" - ", " -- ", " \u2013 ", " \u2014 ") or an em dash without them, followed by a clause that
# opens like an attack (:data:`._injection_patterns.CLAUSE_OPENING_RE`): there a preamble can end
# too. White space is single spaces here (a removed markup tag leaves a few).
_CLAUSE_START: Final = re.compile(
    rf"(?:[:;,]{_CLOSERS}* +| +[-\u2013\u2014]{{1,2}} +|\u2014 *)(?={CLAUSE_OPENING_RE.pattern})"
)


def _join_spaced(match: re.Match[str]) -> str:
    return _SPACED_SEP.sub("", match.group())


def _unconfuse(match: re.Match[str]) -> str:
    word = match.group()
    return word if word.isascii() else word.translate(_CONFUSABLE)


def normalise(text: str) -> str:
    return _normalise_lines(text).replace("\n", " ")


def _normalise_lines(text: str) -> str:
    """:func:`normalise`, except that a whitespace run holding a line break becomes one "\n" (not
    one space): the same length, so the offsets of the two agree."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if not text.isascii():
        text = _MIXED.sub(_unconfuse, text)
    # Join spaced-out letters before collapsing whitespace: "i g n o r e   a l l" -> "ignore   all".
    text = _SPACED.sub(_join_spaced, text)
    text = _LINE_BREAK_WS.sub("\n", text)
    # every "\n" left stands alone (the run around it was taken whole): the other runs become " "
    return _WS_NOT_LINE.sub(" ", text)


# --- features ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Features:
    """Raw counts of one window of text (before idf weighting)."""

    words: Counter[str]
    chars: frozenset[str]
    structure: tuple[bool, ...]
    #: Number of word tokens: how much n-gram evidence the text can carry.
    n_words: int = 0
    #: An attack structure matched, but only inside a reporting frame ("the attacker told the model
    #: to ignore ...", "messages like 'ignore ...'"): a descriptive mention, not an instruction.
    reported: bool = False
    #: The word tokens in order (what the n-gram blocks were counted from).
    tokens: tuple[str, ...] = ()
    #: Token indices (> 0) where a sentence begins (after ``.``, ``!`` or ``?`` and a space, a line
    #: break, or a benign directive left out), or a clause after ``:``, ``;``, ``,`` or a dash that
    #: opens like an attack (an override or disclosing verb, or a turn to the model): the places
    #: where a preamble can end.
    sentence_starts: tuple[int, ...] = ()
    #: Token indices where a piece between two benign directives begins: no bigram crosses them.
    piece_starts: frozenset[int] = frozenset()
    #: A task frame on supplied content was masked in a text with an attack structure (see
    #: :meth:`airlock.guard._injection.Detector.score`: then it is judged unmasked too).
    framed: bool = False


def _char_grams(tokens: list[str] | tuple[str, ...]) -> frozenset[str]:
    # 4-grams of the word stream with leetspeak undone (grams may span one space between words);
    # presence only (binary tf): cheaper than counting, and repetition says little at this level.
    return grams_of(char_stream(tokens))


def char_stream(tokens: list[str] | tuple[str, ...]) -> str:
    """The stream the char 4-grams are taken from: the tokens, leetspeak undone, space-separated,
    with a space at each end."""
    return f" {' '.join(tokens).translate(_LEET)} "


def grams_of(s: str) -> frozenset[str]:
    """The 4-grams of ``s``."""
    return frozenset(map("".join, zip(s, s[1:], s[2:], s[3:], strict=False)))


def _has(norm: str, triggers: tuple[str, ...]) -> bool:
    if not triggers:
        return True
    # map over the bound method runs in C (a generator expression cost ~5% of score())
    return any(map(norm.__contains__, triggers))


#: the override structures' places in :data:`STRUCT_RE` (see :data:`OWNER_FREE_OVERRIDE_RE`)
_OVERRIDE_INDEXES: Final = frozenset(index for index, _, _, _ in OWNER_FREE_OVERRIDE_RE)


def _matches(pattern: re.Pattern[str], norm: str) -> tuple[bool, bool]:
    """(addressed, reported): whether ``pattern`` matches in ``norm`` outside a reporting frame, and
    whether it matches inside one."""
    addressed = reported = False
    for m in pattern.finditer(norm):
        if reported_at(norm, m.start()):
            reported = True
        else:
            return True, reported
    return addressed, reported


def featurize(text: str, *, tasks: bool = True) -> Features:
    """Counts of word 1-2-grams, char 4-grams and the structure flags of ``text`` (one window);
    ``tasks``: tasks on supplied content are masked like the other benign directives."""
    lines = _normalise_lines(text)  # the sentence split sees line breaks; nothing else does
    norm = lines.replace("\n", " ")
    # A benign directive ("ignore the previous formatting", "from now on, answer in Spanish") is no
    # evidence either way: its words are left out of both n-gram blocks and of the word count, and
    # the pieces around it are tokenised apart (no bigram across it). The attack structures below
    # are matched on the whole text all the same.
    matched = [
        _matches(pattern, norm) if _has(norm, trig) and _has(norm, also) else (False, False)
        for pattern, trig, also in STRUCT_RE
    ]
    for index, pattern, trig, also in MORE_SHAPES_RE:  # further shapes of some structures
        if not matched[index][0] and _has(norm, trig) and _has(norm, also):
            addressed, reported = _matches(pattern, norm)
            matched[index] = (addressed, reported or matched[index][1])
    flags = [addressed for addressed, _ in matched]
    if any(flag for index, flag in enumerate(flags) if index not in _OVERRIDE_INDEXES):
        # next to another attack structure an override counts whoever owns the instructions
        for index, pattern, trig, also in OWNER_FREE_OVERRIDE_RE:
            if not flags[index] and _has(norm, trig) and _has(norm, also):
                flags[index] = _matches(pattern, norm)[0]
    structure = tuple(flags)
    spans = benign_directive_spans(norm, tasks=tasks)
    # a task frame was masked around an attack structure: the caller also judges it unmasked
    framed = tasks and any(structure) and has_task_frame(norm)
    pieces, at = [], 0
    for start, end in spans:
        pieces.append(lines[at:start])
        at = end
    pieces.append(lines[at:])
    segs: list[list[str]] = []
    tokens: list[str] = []
    starts: list[int] = []
    for piece in pieces:
        seg: list[str] = []
        for sentence in _SENTENCE_END.split(_TAG.sub(" ", piece) if "<" in piece else piece):
            found = _WORD.findall(sentence)
            if found:
                here = len(tokens) + len(seg)
                starts.append(here)
                # inside the sentence, a clause that opens like an attack starts a suffix too. Its
                # token index is counted on from the previous clause's, never from the sentence's
                # start again: a window of ", you" clauses (400 in 2 KiB) cost a tokenisation of
                # the sentence per clause (256 KiB of them: 7 s, was 0.2). A clause starts after a
                # space or a dash, so no word straddles the place the count resumes at.
                k, at = 0, 0
                for m in _CLAUSE_START.finditer(sentence):
                    k += len(_WORD.findall(sentence, at, m.end()))
                    at = m.end()
                    if 0 < k < len(found) and here + k != starts[-1]:
                        starts.append(here + k)
                seg.extend(found)
        segs.append(seg)
        tokens.extend(seg)
    piece_starts = frozenset(itertools.accumulate((len(seg) for seg in segs[:-1]), initial=0))
    words: Counter[str] = Counter(tokens)
    for seg in segs:
        words.update(f"{a} {b}" for a, b in itertools.pairwise(seg))
    chars = _char_grams(tokens)
    reported = not any(structure) and any(rep for _, rep in matched)
    return Features(
        words,
        chars,
        structure,
        len(tokens),
        reported,
        tuple(tokens),
        tuple(i for i in starts if i),
        piece_starts,
        framed,
    )


def features_of_suffix(feats: Features, start: int) -> Features:
    """The n-gram features of ``feats``' tokens from ``start`` on (no structures): what a text that
    began at that token would count, the same way :func:`featurize` counts a whole text."""
    tokens = feats.tokens[start:]
    words: Counter[str] = Counter(tokens)
    words.update(
        f"{a} {b}"
        for i, (a, b) in enumerate(itertools.pairwise(tokens))
        if start + i + 1 not in feats.piece_starts
    )
    return Features(words, _char_grams(tokens), (False,) * len(feats.structure), len(tokens))
