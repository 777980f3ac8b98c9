"""Strict HTTP framing before authentication: obsolete line folding and proxy headers.

Review 3 found a folded ``Transfer-Encoding`` line accepted next to ``Content-Length`` (h11 folds
it into the previous header's value; a proxy in front may read a header of its own) and
``X-Forwarded-For`` choosing the pre-auth bucket (uvicorn trusts it from 127.0.0.1 by default).
These tests cover the class: a fold anywhere in a head or in chunked trailers, with a space or a
tab, and the near misses that are not folds; and every proxy header uvicorn knows.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.gateway.conftest import Env
from tests.gateway.test_hardening import BODY, _raw

pytestmark = pytest.mark.xdist_group("gateway_env")

PAYLOAD = json.dumps(BODY).encode()


def _port(env: Env) -> int:
    return int(env.url.rsplit(":", 1)[1])


def _refused(env: Env) -> dict[str, int]:
    state = env.running.gateway.state
    assert state is not None and state.guard is not None
    return state.guard.refused


def _head(env: Env, *lines: bytes) -> bytes:
    return (
        b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {env.tokens['acme']}\r\n".encode()
        + b"".join(lines)
    )


@pytest.mark.parametrize(
    "fold",
    [
        b"X-A: b\r\n Transfer-Encoding: chunked\r\n",  # a space
        b"X-A: b\r\n\tTransfer-Encoding: chunked\r\n",  # a tab
        b"X-A: b\n Transfer-Encoding: chunked\n",  # bare LF line ends, which h11 accepts
        b"X-A: b\r\n  \r\n",  # a continuation of nothing but blanks
        b"User-Agent: a\r\n b\r\n",  # an innocent-looking fold is still a fold
    ],
)
def test_a_folded_header_line_is_a_400_that_closes(env: Env, fold: bytes) -> None:
    before = _refused(env)["obs_fold"]
    answer = _raw(_port(env), _head(env, fold, f"Content-Length: {len(PAYLOAD)}\r\n\r\n".encode()) + PAYLOAD)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert answer.count(b"HTTP/1.1") == 1  # nothing else was answered: the connection is closed
    assert b"obsolete" not in answer.lower()  # a fixed phrase, not the parser's words
    assert _refused(env)["obs_fold"] == before + 1


@pytest.mark.parametrize(
    "line",
    [
        b"X-A: b c\r\n",  # spaces inside a value
        b"X-A:  b\r\n",  # spaces after the colon
        b"X-A: b \r\n",  # trailing space
    ],
)
def test_near_misses_of_a_fold_are_served(env: Env, line: bytes) -> None:
    answer = _raw(
        _port(env),
        _head(env, line, f"Content-Length: {len(PAYLOAD)}\r\nConnection: close\r\n\r\n".encode()) + PAYLOAD,
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_a_body_with_line_breaks_and_spaces_is_not_a_fold(env: Env) -> None:
    body = json.dumps(BODY, indent=2).encode()  # "\n  " throughout the body
    assert b"\n " in body
    answer = _raw(
        _port(env), _head(env, f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()) + body
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


@pytest.mark.parametrize("fold", [b"X-T: 1\r\n Content-Length: 5\r\n", b" X-T: 1\r\n"])
def test_a_folded_trailer_line_aborts_the_connection(env: Env, fold: bytes) -> None:
    before = _refused(env)["obs_fold"]
    chunked = f"{len(PAYLOAD):x}\r\n".encode() + PAYLOAD + b"\r\n0\r\n" + fold + b"\r\n"
    answer = _raw(_port(env), _head(env, b"Transfer-Encoding: chunked\r\n\r\n") + chunked)
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert _refused(env)["obs_fold"] == before + 1


def test_plain_trailers_are_still_accepted(env: Env) -> None:
    chunked = f"{len(PAYLOAD):x}\r\n".encode() + PAYLOAD + b"\r\n0\r\nX-T: 1\r\n\r\n"
    answer = _raw(
        _port(env), _head(env, b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n") + chunked
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "10.9.8.7"},
        {"X-Forwarded-For": "10.9.8.7, 127.0.0.1"},
        {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.9.8.7"},
        {"Forwarded": "for=10.9.8.7"},
        {"X-Real-IP": "10.9.8.7"},
    ],
)
def test_proxy_headers_never_change_the_callers_address(env: Env, headers: dict[str, str]) -> None:
    """The address the pre-auth buckets see is the TCP peer's, whatever the request claims."""
    state = env.running.gateway.state
    assert state is not None
    preauth = state.preauth
    assert preauth is not None
    with httpx.Client(base_url=env.url, timeout=20) as client:
        response = client.post(
            "/v2/models/affine/infer",
            json=BODY,
            headers={"Authorization": f"Bearer {env.tokens['acme']}", **headers},
        )
    assert response.status_code == 200, response.text
    assert "10.9.8.7" not in preauth.buckets
    assert "127.0.0.1" in preauth.buckets


@pytest.mark.parametrize(
    "lengths",
    [
        "Content-Length: {n}\r\ncontent-LENGTH: {n}\r\n",  # the same value, another case
        "Content-Length: {n},{n}\r\n",  # a list without a space
        "Content-Length: {n}\r\nContent-Length: {m}\r\n",  # two different values
    ],
)
def test_a_repeated_content_length_is_a_400_that_closes(env: Env, lengths: str) -> None:
    before = _refused(env)["repeated_length"]
    head = lengths.format(n=len(PAYLOAD), m=len(PAYLOAD) + 1).encode()
    answer = _raw(_port(env), _head(env, head, b"\r\n") + PAYLOAD)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert answer.count(b"HTTP/1.1") == 1
    assert _refused(env)["repeated_length"] == before + 1


def test_a_header_whose_name_starts_like_content_length_is_not_a_repeat(env: Env) -> None:
    answer = _raw(
        _port(env),
        _head(
            env,
            b"Content-Length-Hint: 3\r\n",
            f"Content-Length: {len(PAYLOAD)}\r\nConnection: close\r\n\r\n".encode(),
        )
        + PAYLOAD,
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
