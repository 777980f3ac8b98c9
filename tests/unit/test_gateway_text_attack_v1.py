"""Outside attacks on the OpenAI request parser (pure logic): whatever JSON a tenant sends within
the body cap, the parser answers with a 400 (:class:`_Invalid`), never another exception (which the
endpoint turns into a 500 "internal error" and a ``failed:internal`` audit row)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airlock.gateway._openai import _Invalid, parse_text_request

_CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
_PROMPT: dict[str, Any] = {"model": "m", "prompt": "Hi"}
#: JSON values of every shape, including an integer too large for a float
_VALUES: list[Any] = [
    None, True, 0, -1, 10**400, -(10**400), 1.5, 1e308, "", "x", [], ["x"], [1], [None], [[]], [{}],
    [{"type": "text"}], [{"type": "text", "text": 1}], {}, {"include_usage": 10**400},
]  # fmt: skip


def _bodies() -> list[tuple[bool, dict[str, Any]]]:
    out: list[tuple[bool, dict[str, Any]]] = []
    for chat, base in ((True, _CHAT), (False, _PROMPT)):
        for key in sorted(
            {*base, "max_tokens", "temperature", "top_p", "stop", "seed", "stream_options", "n", "user"}
        ):
            for value in _VALUES:
                out.append(
                    (chat, {**base, key: value, **({"stream": True} if key == "stream_options" else {})})
                )
        for value in _VALUES:  # inside a message
            out.append((True, {**_CHAT, "messages": [{"role": "user", "content": value}]}))
            out.append((True, {**_CHAT, "messages": [{"role": value, "content": "x"}]}))
            out.append((True, {**_CHAT, "messages": [value]}))
    return out


@pytest.mark.parametrize(
    "body",
    [
        {**_CHAT, "messages": [{"role": "user", "content": ["x"]}]},  # a part that is not an object
        {**_CHAT, "messages": [{"role": "user", "content": [None]}]},
        {**_CHAT, "temperature": 10**400},  # an integer no float can hold
        {**_CHAT, "top_p": -(10**400)},
    ],
)
def test_a_malformed_field_is_a_400_not_a_500(body: dict[str, Any]) -> None:
    with pytest.raises(_Invalid) as refused:
        parse_text_request(json.dumps(body).encode(), chat=True, ceiling=64, context=256)
    assert refused.value.param in ("messages", "temperature", "top_p")


def test_no_json_value_in_any_field_raises_anything_but_a_400() -> None:
    crashed = []
    for chat, body in _bodies():
        try:
            parse_text_request(json.dumps(body).encode(), chat=chat, ceiling=64, context=256)
        except _Invalid:
            pass
        except Exception as exc:  # any other exception is the bug
            crashed.append((json.dumps(body)[:100], type(exc).__name__))
    assert crashed == []
