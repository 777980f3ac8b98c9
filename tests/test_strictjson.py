"""The one strict JSON parser every untrusted JSON document goes through."""

from __future__ import annotations

import pytest

from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b'{"a": 1, "a": 2}', r"doc has duplicate JSON key 'a'"),
        (b'{"a": NaN}', r"doc has JSON constant NaN is not allowed"),
        (b'{"a": Infinity}', r"JSON constant Infinity is not allowed"),
        (b'{"a": "\\ud800"}', r"lone surrogate"),
        (b'{"a": \xff}', r"not valid UTF-8 at byte 6"),
        (b'{"a": ', r"doc is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, r"doc is not valid JSON: RecursionError"),
    ],
)
def test_rejected(raw: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        parse_json_strict(raw, "doc")


def test_accepted() -> None:
    assert parse_json_strict(b'{"a": [1, 2.5, "\\u00e9", null, true]}', "doc") == {
        "a": [1, 2.5, "é", None, True]
    }


def test_integer_negative_zero_is_refused() -> None:
    # Python reads -0 as 0, serde_json as the float -0.0: two readings of one document.
    with pytest.raises(FormatError, match="integer -0"):
        parse_json_strict(b'{"a": [1, -0]}', "doc")
    assert parse_json_strict(b'{"a": [0, -0.0, -1]}', "doc") == {"a": [0, -0.0, -1]}
