"""Outside review 6: the suffix pass (a benign preamble cannot dilute an attack) only cut after
". ", "! " or "? ". A preamble ended by a line break, by a CJK full stop, or by a full stop followed
by a curly quote or markdown emphasis was not a sentence, so the attack after it was judged only
with the preamble's words and diluted below the threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.guard._injection import _PREAMBLE_REASON, detector
from airlock.guard._injection_features import featurize

HERE = Path(__file__).parent
ATTACKS = [
    text
    for name in ("injection_checkset.json", "injection_checkset_2.json")
    for text in json.loads((HERE / name).read_text())["attacks"]
]


@pytest.mark.parametrize(
    "preamble",
    [
        "Can you help\n",
        "Can you help\r\n\r\n",
        "Can you help\u2028",
        "Can you help。",
        "Can you help?” ",
        "**Can you help?** ",
        "Can you help?_ ",
    ],
)
def test_a_preamble_ended_by_any_sentence_boundary_does_not_hide_an_attack(preamble: str) -> None:
    d = detector()
    tried = saved = 0
    for attack in ATTACKS:
        alone = d.score(attack)
        if not alone.flagged or alone.structured:
            continue  # the suffix rule is about the vocabulary (as in test_injection_preamble.py)
        if featurize(preamble).n_words * 2 > featurize(preamble + attack).n_words:
            continue
        tried += 1
        score = d.score(preamble + attack)
        assert score.flagged, repr(preamble + attack)
        saved += score.reasons[:1] == (_PREAMBLE_REASON,)
    assert tried >= 10
    assert saved >= 1  # the suffix pass is what flags some of them: a boundary was found


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("one two\nthree four", (2,)),
        ("one two \n\n three four", (2,)),
        ("one two\r\nthree four", (2,)),
        ("one two\u2029three four", (2,)),
        ("one two。three four", (2,)),
        ("one two।three four", (2,)),
        ("one “two.” three four", (2,)),
        ("one **two?** three four", (2,)),
        # not a boundary: a full stop inside a word or a number, a line-free space run
        ("v1.2 is out now", ()),
        ("one two   three\tfour", ()),
    ],
)
def test_sentence_starts_at_line_breaks_and_other_full_stops(text: str, starts: tuple[int, ...]) -> None:
    feats = featurize(text)
    assert feats.sentence_starts == starts
    # a line break is no word and no separator the structures see: the tokens are unchanged
    assert feats.tokens == featurize(" ".join(text.split())).tokens
