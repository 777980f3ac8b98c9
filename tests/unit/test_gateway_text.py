"""The text-model pieces of the gateway on their own: the OpenAI request parser, the token and
generation budgets, the audit row's token counts, the store's schema upgrade, the config keys.

(The endpoints themselves, with the real model and the official client: tests/gateway/test_openai.py.)
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airlock.errors import UsageError
from airlock.gateway._audit import GENESIS, chain_hash, verify_chain
from airlock.gateway._config import LIMIT_FIELDS, MAX_CONTEXT, TenantLimits, load_config
from airlock.gateway._openai import _Invalid, _spent, _window, parse_text_request
from airlock.gateway._sqlite_store import SqliteStore
from airlock.gateway._store import AuditEntry
from airlock.gateway._workers import context_claim
from airlock.sandbox._text import Generation

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


def _chat(**extra: object) -> bytes:
    return json.dumps({**CHAT, **extra}).encode()


def _refused(raw: bytes, *, chat: bool = True, ceiling: int = 64) -> _Invalid:
    with pytest.raises(_Invalid) as refused:
        parse_text_request(raw, chat=chat, ceiling=ceiling)
    return refused.value


# -- the request parser --------------------------------------------------------------------------


def test_a_chat_request_becomes_a_generation_request() -> None:
    parsed = parse_text_request(
        _chat(max_tokens=5, temperature=0, top_p=0.5, seed=3, stop="\n", stream=True,
              stream_options={"include_usage": True}, user="u1"),
        chat=True, ceiling=64, context=256,
    )  # fmt: skip
    assert parsed.generate == {
        "messages": [{"role": "user", "content": "Hi"}], "prompt": None, "max_tokens": 5, "temperature": 0,
        "top_p": 0.5, "seed": 3, "stop": ["\n"], "context": 256,
    }  # fmt: skip
    assert (parsed.model, parsed.stream, parsed.include_usage, parsed.prompt_bytes) == ("m", True, True, 2)


def test_defaults_follow_the_openai_api() -> None:
    chat = parse_text_request(_chat(), chat=True, ceiling=64)
    # chat: max_tokens up to the model's ceiling; temperature 1, top_p 1 (OpenAI's defaults)
    assert (chat.generate["max_tokens"], chat.generate["temperature"], chat.generate["top_p"]) == (
        64,
        1.0,
        1.0,
    )
    assert (chat.stream, chat.include_usage, chat.generate["seed"], chat.generate["stop"]) == (
        False,
        False,
        None,
        [],
    )
    completion = parse_text_request(b'{"model": "m", "prompt": "x"}', chat=False, ceiling=64)
    assert completion.generate["max_tokens"] == 16  # /v1/completions' documented default
    assert (
        parse_text_request(b'{"model": "m", "prompt": "x"}', chat=False, ceiling=8).generate["max_tokens"]
        == 8
    )


def test_null_is_the_same_as_absent() -> None:
    nulls = {k: None for k in ("max_tokens", "temperature", "top_p", "seed", "stop", "stream", "user", "n")}
    assert parse_text_request(_chat(**nulls), chat=True, ceiling=64) == parse_text_request(
        _chat(), chat=True, ceiling=64
    )


@pytest.mark.parametrize("name", ["tools", "functions", "logit_bias", "response_format", "frequency_penalty",
                                  "presence_penalty", "top_logprobs", "prompt", "Model", "max_token"])  # fmt: skip
def test_every_unsupported_parameter_is_named(name: str) -> None:
    refused = _refused(_chat(**{name: 1}))
    assert refused.param == name and name in str(refused)


@pytest.mark.parametrize("name", ["messages", "max_completion_tokens", "Prompt"])
def test_chat_only_parameters_are_unsupported_on_completions(name: str) -> None:
    assert _refused(json.dumps({"model": "m", "prompt": "x", name: 1}).encode(), chat=False).param == name


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"n": 2}, "n"), ({"n": 0}, "n"), ({"logprobs": True}, "logprobs"), ({"echo": True}, "echo"),
     ({"best_of": 2}, "best_of"), ({"suffix": "x"}, "suffix")],
)  # fmt: skip
def test_parameters_taken_only_at_their_default(extra: dict[str, object], param: str) -> None:
    body = json.dumps({"model": "m", "prompt": "x", **extra}).encode()
    assert _refused(body, chat=False).param == param
    default = {"n": 1, "logprobs": None, "echo": False, "best_of": 1, "suffix": None}[param]
    parse_text_request(
        json.dumps({"model": "m", "prompt": "x", param: default}).encode(), chat=False, ceiling=8
    )


@pytest.mark.parametrize(("asked", "ok"), [(63, True), (64, True), (65, False), (0, False), (-1, False)])
def test_max_tokens_at_the_ceiling(asked: int, ok: bool) -> None:
    for key in ("max_tokens", "max_completion_tokens"):
        if ok:
            assert (
                parse_text_request(_chat(**{key: asked}), chat=True, ceiling=64).generate["max_tokens"]
                == asked
            )
        else:
            assert _refused(_chat(**{key: asked})).param == "max_tokens"


def test_max_tokens_and_max_completion_tokens_not_both() -> None:
    assert "not both" in str(_refused(_chat(max_tokens=4, max_completion_tokens=4)))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[]", "JSON object"),
        (b'{"model": "m", "model": "n", "messages": []}', "not valid JSON"),
        (b"{", "not valid JSON"),
        (json.dumps({"messages": CHAT["messages"]}).encode(), "model is required"),
        (_chat(messages=[]), "non-empty"),
        (_chat(messages=[{"role": "tool", "content": "x"}]), "role"),
        (_chat(messages=[{"role": "user", "content": "x", "name": "n"}]), "only role and content"),
        (_chat(messages=[{"role": "user"}]), "role and content"),
        (
            _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]),
            "text parts",
        ),
        (_chat(messages=[{"role": "user", "content": 5}]), "string or a list"),
        (_chat(stream_options={"include_usage": True}), "only allowed with stream"),
        (_chat(stream=True, stream_options={"include_usage": 1}), "boolean"),
        (_chat(stream=True, stream_options={"x": 1}), "only include_usage"),
        (_chat(stream="yes"), "stream must be a boolean"),
        (_chat(stop=["a", "b", "c", "d", "e"]), "stop"),
        (_chat(stop=[""]), "stop"),
        (_chat(stop=5), "stop"),
        (_chat(temperature=True), "temperature"),
        (_chat(temperature=2.01), "temperature"),
        (_chat(top_p=0), "top_p"),
        (_chat(seed=-1), "seed"),
        (_chat(seed=1.5), "seed"),
        (_chat(user=5), "user"),
    ],
)
def test_malformed_requests_say_what_is_wrong(body: bytes, fragment: str) -> None:
    assert fragment in str(_refused(body))


def test_content_parts_roles_and_prompt_arrays() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    messages = [{"role": "developer", "content": parts}, {"role": "assistant", "content": "c"}]
    parsed = parse_text_request(_chat(messages=messages), chat=True, ceiling=8)
    assert parsed.generate["messages"] == [
        {"role": "system", "content": "ab"},
        {"role": "assistant", "content": "c"},
    ]
    one = parse_text_request(b'{"model": "m", "prompt": ["x\\u00e9"]}', chat=False, ceiling=8)
    assert (one.generate["prompt"], one.prompt_bytes) == ("x\u00e9", 3)
    assert "prompt" in str(_refused(b'{"model": "m", "prompt": ["a", "b"]}', chat=False))


# -- token accounting (the buckets themselves: tests/unit/test_gateway_limiter.py) ---------------


def test_spent_tokens_bound_the_jobs_prompt_claim() -> None:
    done = Generation("x", "stop", 10**9, 7)  # the job claims a billion prompt tokens
    assert _spent(100, done, reserved=50) == 100 + 7  # the request's window bounds the claim
    assert _spent(0, done, reserved=50) == 50 + 7  # no window: the reservation bounds it
    assert _spent(100, None, reserved=50) == 50  # nothing ran: charged in full


@pytest.mark.parametrize(
    ("context", "per_minute", "window"),
    [(256, 255, 255), (256, 256, 256), (256, 257, 256), (0, 100, 100), (0, 2**40, 2**31 - 1)],
)
def test_a_requests_window_is_the_context_and_at_most_a_minutes_token_budget(
    context: int, per_minute: int, window: int
) -> None:
    """Outside review 25: the job holds prompt + max_tokens, as the model counts them, to this."""

    class Lane:
        pass

    lane = Lane()
    lane.context = context  # type: ignore[attr-defined]
    assert _window(lane, per_minute) == window  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("summary", "context"),
    [('{"context": 8192}', 8192), ('{"context": 0}', 0), ('{"context": -1}', 0), ('{"context": true}', 0),
     (f'{{"context": {MAX_CONTEXT}}}', MAX_CONTEXT), (f'{{"context": {MAX_CONTEXT + 1}}}', 0),
     ('{"context": 1.5}', 0), ("not json", 0), ("[8192]", 0), ('{"context": 1, "context": 2}', 0)],
)  # fmt: skip
def test_a_workers_context_claim_is_bounded(summary: str, context: int) -> None:
    assert context_claim(summary) == context


# -- audit rows with token counts (their MAC: tests/unit/test_gateway_units.py) ------------------

KEY = b"k" * 32
ROW: dict[str, Any] = dict(
    seq=1, time=1.5, tenant="acme", key_id="k1", model="m", model_digest="d", request_id="r", decision="allowed",
    status=200,
)  # fmt: skip


def test_a_state_file_from_before_text_models_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the schema of airlock 0.1
        db.executescript("""
            CREATE TABLE tenants (name TEXT PRIMARY KEY, created REAL NOT NULL, requests_per_minute INTEGER,
                                  tensor_bytes_per_minute INTEGER, max_concurrent INTEGER);
            CREATE TABLE audit (seq INTEGER PRIMARY KEY, time REAL NOT NULL, tenant TEXT NOT NULL,
                key_id TEXT NOT NULL, model TEXT NOT NULL, model_digest TEXT NOT NULL, request_id TEXT NOT NULL,
                decision TEXT NOT NULL, status INTEGER NOT NULL, prev_hash TEXT NOT NULL, row_hash TEXT NOT NULL);
        """)
        db.execute("INSERT INTO tenants VALUES ('old', 1.0, 5, 6, 7)")
        mac = chain_hash(KEY, GENESIS, **ROW)
        db.execute("INSERT INTO audit VALUES (1, 1.5, 'acme', 'k1', 'm', 'd', 'r', 'allowed', 200, ?, ?)",
                   (GENESIS, mac))  # fmt: skip
    store = SqliteStore(path, audit_key=KEY)
    old = store.tenant("old")
    assert old is not None and old.limits == TenantLimits(5, 6, 7)  # the text limits keep their defaults
    store.add_tenant("new", TenantLimits(1, 2, 3, 4, 5))
    new = store.tenant("new")
    assert new is not None and new.limits == TenantLimits(1, 2, 3, 4, 5)
    store.append_audit_many([AuditEntry(2.0, "acme", "k", "m", "d", "r2", "allowed", 200, 9, 8)])
    rows = list(store.audit_rows())
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [(0, 0), (9, 8)]
    assert verify_chain(rows, KEY).ok  # the old row's MAC still holds
    store.close()


# -- config ------------------------------------------------------------------------------------


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "g.toml"
    path.write_text(f'[server]\nstate = "s.db"\n{body}', encoding="utf-8")
    return path


def test_text_model_keys_and_defaults(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, """
[server]
""".replace("[server]\n", "") + """
[defaults]
tokens_per_minute = 7
max_generations = 3

[models.t]
path = "t.gguf"
tenants = ["a"]
max_tokens = 10
context_length = 10
"""))  # fmt: skip
    model = config.model("t")
    assert model is not None and (model.max_tokens, model.context_length) == (10, 10)
    assert (config.defaults.tokens_per_minute, config.defaults.max_generations) == (7, 3)
    assert config.server.generation_timeout_seconds == 300.0
    assert set(LIMIT_FIELDS) == {"requests_per_minute", "tensor_bytes_per_minute", "max_concurrent",
                                 "tokens_per_minute", "max_generations"}  # fmt: skip


@pytest.mark.parametrize(
    ("model", "fragment"),
    [("max_tokens = 11\ncontext_length = 10", "larger than its context_length"),
     ("max_tokens = 0", "max_tokens must be > 0"),
     ("context_length = -1", "context_length must be >= 0"),
     (f"max_tokens = {MAX_CONTEXT + 1}", "at most"),
     (f"context_length = {MAX_CONTEXT + 1}", "at most")],
)  # fmt: skip
def test_text_model_keys_out_of_range(tmp_path: Path, model: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        load_config(_config(tmp_path, f'\n[models.t]\npath = "t.gguf"\ntenants = ["a"]\n{model}\n'))


@pytest.mark.parametrize("key", ["tokens_per_minute", "max_generations"])
def test_text_limits_must_be_positive(tmp_path: Path, key: str) -> None:
    with pytest.raises(UsageError, match=key):
        load_config(_config(tmp_path, f"\n[defaults]\n{key} = 0\n"))
