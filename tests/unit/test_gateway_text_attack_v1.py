"""Outside attacks on the OpenAI request parser and the job's stop strings (pure logic): whatever
JSON a tenant sends within the body cap, the parser answers with a 400 (:class:`_Invalid`), never
another exception (which the endpoint turns into a 500 "internal error" and a ``failed:internal``
audit row); no part of a stop string is ever sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

from airlock.gateway._openai import _Invalid, parse_text_request, read_text_body
from airlock.gateway._text_lane import TextLane
from airlock.gateway._workers import WorkerCrashed, WorkerTimeout
from airlock.sandbox._runtimes.text_gguf import _Stream
from airlock.sandbox._text import Generation

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


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000,  # nesting far past the recursion limit, well within a body cap
        b'{"model": "m", "prompt": ' + b"[" * 100_000,
        b'{"model": "m", "prompt": "\\ud800"}',  # a lone surrogate
        b'{"model": "m", "model": "n"}',  # duplicate keys: parsers disagree on which wins
        b"\xff",
    ],
)
def test_hostile_json_is_a_400_before_any_model_is_looked_up(raw: bytes) -> None:
    assert read_text_body(raw, False, {"m": (64, 256)}) == ("refused", "the body is not valid JSON", None)


def test_read_text_body_keeps_the_order_of_checks() -> None:
    models = {"m": (64, 256)}
    assert read_text_body(b'{"prompt": "x"}', False, models) == ("refused", "model is required", "model")
    # a model that is none of the tenant's text models: the caller decides 404, 403 or 400
    assert read_text_body(b'{"model": "other", "bogus": 1}', False, models) == ("model", "other", None)
    assert read_text_body(b'{"model": "m", "max_tokens": 65, "prompt": "x"}', False, models) == (
        "invalid", "m", ("max_tokens is above this model's limit of 64", "max_tokens"),
    )  # fmt: skip
    kind, name, parsed = read_text_body(b'{"model": "m", "prompt": "x"}', False, models)
    assert (kind, name, parsed.generate["context"]) == ("parsed", "m", 256)


# -- the job's stop-string handling (text_gguf._Stream, pure logic) --------------------------------

_PIECES = {1: " 4", 2: ",", 3: " 5", 4: "\ufffd"}


def _stream(stop: list[str]) -> _Stream:
    return _Stream(lambda ids: "".join(_PIECES[i] for i in ids), stop)


def test_a_stop_string_split_across_tokens_is_never_sent_in_part() -> None:
    stream = _stream([", 5"])
    assert [stream.push(1), stream.push(2), stream.push(3)] == [" 4", "", ""]
    assert stream.stopped and stream.sent == " 4"


def test_text_held_back_for_a_stop_string_that_did_not_come_is_sent_at_the_end() -> None:
    last = _stream([", 4, 9"])
    assert [last.push(1), last.push(2), last.push(3, last=True)] == [" 4", "", ", 5"]
    ended = _stream([", 4, 9"])
    assert [ended.push(1), ended.push(2), ended.flush()] == [" 4", "", ","]
    assert ended.sent == " 4,"


# -- the text lane's queue -------------------------------------------------------------------------


class _Busy:
    """A worker stand-in that stays busy: nothing in these tests generates."""

    pid = None

    def start(self) -> None: ...
    def generate(self, request: dict[str, Any]) -> Any:
        raise AssertionError("not reached")

    def context(self) -> int:
        return 0

    def alive(self) -> bool:
        return True

    def kill(self) -> None: ...


def test_requests_that_gave_up_waiting_do_not_stay_in_the_lanes_queue() -> None:
    """Each request that waited for a worker and gave up (deadline: 504; client gone) left its
    cancelled waiter in the lane's queue until a worker was released: with the worker busy for a
    long generation, or being replaced again and again, the queue grew with every request."""

    async def run() -> int:
        lane = TextLane("acme", "m", "d", _Busy, 1)
        await lane.start()
        held = await lane._acquire(asyncio.get_running_loop().time() + 1)  # the only worker, busy
        for _ in range(50):
            with pytest.raises(WorkerTimeout):
                await lane.open({}, asyncio.get_running_loop().time() + 0.001)
        waiting = asyncio.ensure_future(lane.open({}, asyncio.get_running_loop().time() + 30))
        await asyncio.sleep(0.01)
        waiting.cancel()  # the client went away
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        queued = len(lane._waiters)
        lane._release(held)
        await lane.close()
        return queued

    assert asyncio.run(run()) == 0


class _Told:
    """The stream a job sends back: nothing generated, then ``done`` with ``result``."""

    def __init__(self, result: Generation) -> None:
        self.result = result

    def __iter__(self) -> Any:
        return iter(())

    def close(self) -> None: ...


class _ContextLiar(_Busy):
    """A hostile job: refuses every request as too long for its context, whatever its size."""

    started = 0

    def start(self) -> None:
        type(self).started += 1
        self.dead = False

    def generate(self, request: dict[str, Any]) -> Any:
        return _Told(Generation("", "context", 3, 0))  # 3 + max_tokens fits a context of 256

    def alive(self) -> bool:
        return not self.dead

    def kill(self) -> None:
        self.dead = True


def test_a_job_whose_context_refusal_its_own_counts_contradict_is_replaced() -> None:
    """The gateway answered 503 "being restarted" to a job that claimed a context overflow its own
    prompt count contradicts, and put the lying worker back in the lane to answer the next request."""

    async def run() -> tuple[bool, int]:
        lane = TextLane("acme", "m", "d", _ContextLiar, 1, context_length=256)
        await lane.start()
        (liar,) = lane._all
        assert isinstance(liar, _ContextLiar)
        opened = await lane.open({"max_tokens": 16}, asyncio.get_running_loop().time() + 5)
        with pytest.raises(WorkerCrashed):
            async for _ in opened.pieces():
                pass
        for _ in range(100):  # the replacement starts in the background
            if lane.restarted:
                break
            await asyncio.sleep(0.01)
        replaced = liar not in lane._all and liar.dead
        await lane.close()
        return replaced, lane.restarted

    assert asyncio.run(run()) == (True, 1)


def test_a_context_refusal_the_counts_support_keeps_the_worker() -> None:
    async def run() -> bool:
        lane = TextLane("acme", "m", "d", _ContextLiar, 1, context_length=256)
        await lane.start()
        opened = await lane.open({"max_tokens": 254}, asyncio.get_running_loop().time() + 5)  # 3 + 254 > 256
        async for _ in opened.pieces():
            pass
        kept = opened.result is not None and opened.result.finish == "context" and lane.restarted == 0
        await lane.close()
        return kept and opened.error is None

    assert asyncio.run(run())


@pytest.mark.parametrize(("window", "kept"), [(18, True), (19, False), (0, False)])
def test_a_context_refusal_is_judged_against_the_requests_window(window: int, kept: bool) -> None:
    """Outside review 25: a request's window (a minute of its tenant's token budget) can be smaller
    than the lane's context; a refusal true for the window (3 + 16 > 18) is not a lie, and the
    worker that told it stays; one the window contradicts (3 + 16 <= 19), or the context does (no
    window), replaces it."""

    async def run() -> tuple[bool, int]:
        lane = TextLane("acme", "m", "d", _ContextLiar, 1, context_length=256)
        await lane.start()
        opened = await lane.open({"max_tokens": 16, "context": window}, asyncio.get_running_loop().time() + 5)
        with contextlib.suppress(WorkerCrashed):
            async for _ in opened.pieces():
                pass
        for _ in range(100):
            if lane.restarted:
                break
            await asyncio.sleep(0.01)
        told = opened.result is not None and opened.result.finish == "context" and opened.error is None
        await lane.close()
        return told, lane.restarted

    assert asyncio.run(run()) == ((True, 0) if kept else (False, 1))


# -- review 3: a chat request's message count is bounded before any per-message work ---------------


def _many(count: int) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": ""}] * count}).encode()


@pytest.mark.parametrize(("context", "most"), [(8, 8), (0, 2048), (100_000, 2048)])
def test_a_chat_request_holds_at_most_the_context_or_2048_messages(context: int, most: int) -> None:
    models = {"m": (4, context)}
    for count in (most - 1, most):
        kind, _name, _detail = read_text_body(_many(count), True, models)
        assert kind == "parsed", (count, _detail)
    kind, _name, detail = read_text_body(_many(most + 1), True, models)
    assert kind == "invalid"
    assert detail == (f"messages may hold at most {most} messages for this model", "messages")


def test_error_texts_carry_no_caller_bytes_but_identifier_shaped_names() -> None:
    models = {"m": (64, 256)}
    odd = '{"model": "m", "prompt": "x", "\\u202ebad name ' + "z" * 100 + '": 1}'
    assert read_text_body(odd.encode(), False, models) == ("invalid", "m", ("unsupported parameter", None))
    named = b'{"model": "m", "prompt": "x", "logit_bias": {}}'
    assert read_text_body(named, False, models) == (
        "invalid",
        "m",
        ("unsupported parameter: logit_bias", "logit_bias"),
    )
    long_name = b'{"model": "m", "prompt": "x", "' + b"a" * 41 + b'": 1}'  # one over the 40 shown
    assert read_text_body(long_name, False, models) == ("invalid", "m", ("unsupported parameter", None))
    at_40 = b'{"model": "m", "prompt": "x", "' + b"a" * 40 + b'": 1}'
    assert read_text_body(at_40, False, models)[2] == ("unsupported parameter: " + "a" * 40, "a" * 40)
    digits = b'{"model": "m", "prompt": "x", "max_tokens": ' + b"7" * 4000 + b"}"
    assert read_text_body(digits, False, models) == (
        "invalid", "m", ("max_tokens is above this model's limit of 64", "max_tokens"),
    )  # fmt: skip
    extra = b'{"model": "m", "messages": [{"role": "user", "content": "x", "zq_secret_field": 1}]}'
    message = read_text_body(extra, True, models)[2]
    assert message == ("messages[0] may hold only role and content", "messages")
