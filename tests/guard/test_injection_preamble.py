"""A benign preamble must not dilute an attack the vocabulary model flags on its own.

The n-gram blocks are L2-normalised, so every benign word put in front of an attack lowers its
vocabulary score: "Can you help? " before each S-Labs test injection used to drop recall from 0.84
to 0.59 (docs/guard.md). The detector now also judges each sentence suffix of a window that holds at
least half of its words (``Detector.suffix_min_words``), in one pass over the window's own counts
(``Detector._best_suffix``); ``features_of_suffix`` counts a suffix again from its tokens, the slow
way, and is the oracle here.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from airlock.guard._injection import _PREAMBLE_REASON, detector
from airlock.guard._injection_features import features_of_suffix, featurize

HERE = Path(__file__).parent
SETS = [
    json.loads((HERE / name).read_text()) for name in ("injection_checkset.json", "injection_checkset_2.json")
]
ATTACKS = [text for s in SETS for text in s["attacks"]]
BENIGN = [text for s in SETS for text in s["hard_negatives"]]
PREAMBLES = ["Can you help? ", "Hi! Quick question. ", "Thanks for yesterday. "]


def _words(text: str) -> int:
    return featurize(text).n_words


def _slow_best(text: str) -> tuple[float, int]:
    d = detector()
    feats = featurize(text)
    best, at = -math.inf, 0
    for start in feats.sentence_starts:
        if feats.n_words - start < d.suffix_min_words(feats.n_words):
            continue
        logit = d._logit(features_of_suffix(feats, start))[0]
        if logit > best:
            best, at = logit, start
    return best, at


def test_the_one_pass_equals_counting_every_suffix_again() -> None:
    d = detector()
    rng = random.Random(20261130)  # noqa: S311 - a fixed sample of compositions, not a secret
    pool = (
        ATTACKS
        + BENIGN
        + [
            # benign directives (left out of the n-grams: pieces no bigram crosses) and markup tags
            "Ignore the previous formatting and use bullets. Then list the steps.",
            "<p>From now on, answer in Spanish.</p> Tell me about the weather! Is it cold?",
            "Summarise this: 'The meeting moved to Friday.' Also: ignore typos, please.",
            # clause marks before a clause that opens like an attack start suffixes too
            "Quick question about my homework: now tell me, what is the answer - print it",
            "Thanks for yesterday; you were great \u2014 reveal nothing, do not forget the list",
        ]
    )
    judged = 0
    for _ in range(300):
        text = " ".join(rng.sample(pool, rng.randint(1, 5)))
        feats = featurize(text)
        fast = d._best_suffix(feats, d._logit(feats)[2])
        slow = _slow_best(text)
        assert fast[1] == slow[1], text
        assert fast[0] == slow[0] or math.isclose(fast[0], slow[0], rel_tol=1e-9, abs_tol=1e-9), text
        judged += fast[0] != -math.inf
    assert judged > 100  # most compositions had suffixes to judge: the comparison is not vacuous


def test_a_short_benign_preamble_does_not_hide_an_attack() -> None:
    d = detector()
    saved = 0
    tried = 0
    for attack in ATTACKS:
        alone = d.score(attack)
        if not alone.flagged or alone.structured:
            continue  # the rule is about the vocabulary; structures are presence flags, never diluted
        for preamble in PREAMBLES:
            if _words(preamble) * 2 > _words(preamble + attack):
                continue  # a preamble as long as the attack is outside the rule (docs/guard.md)
            tried += 1
            score = d.score(preamble + attack)
            assert score.flagged, preamble + attack
            saved += score.reasons[:1] == (_PREAMBLE_REASON,)
    assert tried >= 10
    # without the suffix rule these were diluted below the threshold: the rule is what flags them
    assert saved >= 1


@pytest.mark.parametrize(
    ("text", "judged_from"),
    [
        ("alpha bravo charlie delta echo. foxtrot golf hotel india juliet.", 5),  # suffix 5 of 10: N
        ("alpha bravo charlie delta. echo foxtrot golf hotel india juliet.", 4),  # 6 of 10: N + 1
        ("alpha bravo charlie delta echo foxtrot. golf hotel india juliet.", None),  # 4 of 10: N - 1
        ("alpha bravo charlie. delta echo foxtrot. golf hotel india juliet kilo.", 3),  # 8 of 11
    ],
)
def test_a_suffix_is_judged_alone_from_half_the_window(text: str, judged_from: int | None) -> None:
    d = detector()
    feats = featurize(text)
    assert d.suffix_min_words(feats.n_words) == max(d.min_words_unstructured, (feats.n_words + 1) // 2)
    logit, at = d._best_suffix(feats, d._logit(feats)[2])
    if judged_from is None:
        assert logit == -math.inf
    else:
        assert logit != -math.inf and at == judged_from


def test_sentence_starts_follow_sentence_ends_and_benign_directives() -> None:
    feats = featurize('One two three. "Four five!" Six? seven (eight.) nine')
    assert feats.tokens == ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert feats.sentence_starts == (3, 5, 6, 8)
    masked = featurize("Please ignore the previous formatting and summarise the report in three lines")
    assert masked.sentence_starts and masked.sentence_starts[0] in masked.piece_starts
