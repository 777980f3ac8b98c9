"""The OpenAI-compatible text endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

The same tenants, keys, scopes, TLS, audit and metrics as the KServe routes (:mod:`._app`); the
checks run in this order, each refusal audited and counted:

401 unauthenticated -> 429 requests in flight -> 429 request budget -> 413 body cap -> 400 not
JSON / no model -> 404 model not served to this tenant (the same answer as a model that does not
exist) -> 403 key not scoped for it -> 400 not a text model, malformed request (an unsupported
parameter is named), ``max_tokens`` above the model's ceiling or context -> 400 refused by the
model's input guard (:mod:`._text_guard`; the worker gets the texts it rewrote) -> 429 generations
running -> 400 (larger than a minute's budget) / 429 tokens-per-minute budget -> audit row
"started" -> a free worker of the tenant's own lane (504 none before the deadline, 503) -> 400 when
the prompt and ``max_tokens`` do not fit the model's context, or the job refused the request with
the model's own error (its chat template raised: ``failed:model``, the worker serves on) -> 200.

Token budget: before generating, ``max_tokens`` plus an estimate of the prompt (a quarter of its
UTF-8 bytes, at most the context) is reserved; when the generation ended, the reservation is
settled against the real counts (the job's count of the prompt is a claim, bounded by the model's
context). The estimate is no bound (template tokens, text cut finer than 4 bytes a token), so the
job gets a window of at most a minute's budget (:func:`_window`): it refuses, with the model's own
count and before it runs anything, a prompt and ``max_tokens`` above it (400 ``denied:tokens``).
A guarded model's answer is checked before the caller sees any of it (502 when
withheld; streamed, it is held and sent whole, or the stream ends with an ``error`` event). A
streamed answer starts only once the first token (or the end) is there, so a refusal by the model
is still a plain 4xx/5xx answer; after that, a failure ends the stream with an
``error`` event and no ``[DONE]``. A client that goes away while its request waits for a worker or
for the first token ends the request at once (499); one that goes away later stops its generation
between two tokens. A body above ``offload_bytes`` is parsed in the tenant's codec process, never
on the event loop; an answer whose outcome row cannot be written is not delivered (503).

Error bodies have the OpenAI shape ``{"error": {"message", "type", "param", "code"}}`` with fixed
texts; never the model's text, a traceback, a key, or another tenant's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError
from airlock.gateway._app import (
    AUDIT_UNAVAILABLE,
    CODEC_UNAVAILABLE,
    STATE_UNAVAILABLE,
    GatewayState,
    _admission_view,
    _audit,
    _auth,
    _body,
    _entry,
    _error,
    _limited,
    _model_for,
    _model_label,
    _Refused,
    post_audit,
)
from airlock.gateway._backend import BackendUnavailable
from airlock.gateway._codec import CodecUnavailable
from airlock.gateway._guard_policy import GuardPolicy
from airlock.gateway._limiter import Admit
from airlock.gateway._offload import background, offload
from airlock.gateway._store import AuditUnavailable
from airlock.gateway._text_guard import GuardTrail, guard_input, guard_output
from airlock.gateway._text_lane import KILL_AFTER, TextLane, TextRun
from airlock.gateway._workers import ModelFailed, WorkerCrashed, WorkerTimeout
from airlock.guard import Pseudonyms
from airlock.sandbox._text import Generation, build_request

__all__ = [
    "OPENAI_ROUTES", "chat_completions", "completions", "list_text_models", "read_text_body", "text_model",
]  # fmt: skip

_log = logging.getLogger("airlock.gateway")
_T = TypeVar("_T")

_TYPES: Final = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error",
    499: "client_closed", 500: "server_error", 502: "server_error", 503: "server_error", 504: "timeout",
}  # fmt: skip
#: parameters each endpoint takes (anything else is a 400 naming it)
_CHAT: Final = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
    "stream", "stream_options", "n", "user",
})  # fmt: skip
_COMPLETION: Final = frozenset({
    "model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "stream_options",
    "n", "user", "echo", "suffix", "logprobs", "best_of",
})  # fmt: skip
#: accepted only at their default value (so clients that always send them work)
_DEFAULTS: Final[Mapping[str, object]] = {
    "n": 1,
    "echo": False,
    "suffix": None,
    "logprobs": None,
    "best_of": 1,
}
_ROLES: Final = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
#: OpenAI's default max_tokens for /v1/completions
_COMPLETION_DEFAULT_MAX: Final = 16


#: messages one chat request may hold (a fixed bound, far above real conversations), and never more than the
#: model's context window in tokens
MAX_MESSAGES: Final = 2048
_NOT_JSON: Final = "the body is not valid JSON"
#: the job refused the request with an error of the model's (its chat template raised, or there is
#: none): a fixed phrase, never the model's words
MODEL_REFUSED: Final = "the model could not run on this request"
#: a caller's parameter name that an error may name: an identifier (what OpenAI's parameters are)
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def _shown_name(name: str) -> str | None:
    """``name`` when it is identifier-shaped (bounded, nothing but ASCII letters, digits and
    underscores), else nothing: an error text never carries other bytes the caller sent."""
    return name if _NAME.fullmatch(name) else None


class _Invalid(Exception):
    """The request body is not one this endpoint takes (a 400 with this text)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _oai(
    status: int, message: str, headers: Mapping[str, str] | None = None, param: str | None = None
) -> Response:
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "server_error"),
            "param": param,
            "code": None,
        }
    }
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _as_openai(response: Response) -> Response:
    """A refusal built by the shared KServe helpers, in the OpenAI error shape (same status, headers);
    one already in that shape is returned as it is."""
    try:
        error = json.loads(bytes(response.body))["error"]
    except (ValueError, KeyError, TypeError):
        error = "error"
    if isinstance(error, dict):
        return response
    message = str(error)
    headers = {k: v for k, v in response.headers.items() if k in ("retry-after", "www-authenticate")}
    return _oai(response.status_code, message, headers)


@dataclass(frozen=True)
class TextRequest:
    model: str
    #: the fields of ``build_request`` (checked by it)
    generate: dict[str, Any]
    stream: bool
    include_usage: bool
    #: UTF-8 bytes of the prompt text (for the token reservation)
    prompt_bytes: int


def _optional(body: Mapping[str, Any], key: str) -> Any:
    """A parameter's value; null and absent are the same (clients send both)."""
    return body.get(key)


def _number(body: Mapping[str, Any], key: str, default: float) -> float:
    value = _optional(body, key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"{key} must be a number", key)
    try:
        return float(value)
    except OverflowError:  # an integer no float holds (JSON integers have no size limit)
        raise _Invalid(f"{key} is out of range", key) from None


def _count(body: Mapping[str, Any], key: str) -> int | None:
    value = _optional(body, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"{key} must be an integer", key)
    return value


def _stop(body: Mapping[str, Any]) -> list[str]:
    value = _optional(body, "stop")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise _Invalid("stop must be a string or a list of strings", "stop")


def _content(index: int, value: object) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, dict) or set(part) != {"type", "text"}:
                raise _Invalid(f"messages[{index}].content: only text parts are supported", "messages")
            text = part["text"]
            if part["type"] != "text" or not isinstance(text, str):
                raise _Invalid(f"messages[{index}].content: only text parts are supported", "messages")
            parts.append(text)
        return "".join(parts)
    raise _Invalid(f"messages[{index}].content must be a string or a list of text parts", "messages")


def _messages(value: object, context: int) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _Invalid("messages must be a non-empty array", "messages")
    # every message takes at least one token of the context: more can never fit (and each costs
    # Python work here, on the guard and in the job); at most MAX_MESSAGES in any case
    most = min(MAX_MESSAGES, context) if context > 0 else MAX_MESSAGES
    if len(value) > most:
        raise _Invalid(f"messages may hold at most {most} messages for this model", "messages")
    out: list[dict[str, str]] = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise _Invalid(f"messages[{index}] must be an object with role and content", "messages")
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise _Invalid(f"messages[{index}] may hold only role and content", "messages")
        role = message["role"]
        if not isinstance(role, str) or role not in _ROLES:
            raise _Invalid(f"messages[{index}].role must be one of {', '.join(_ROLES)}", "messages")
        out.append({"role": _ROLES[role], "content": _content(index, message["content"])})
    return out


def parse_text_request(raw: bytes, *, chat: bool, ceiling: int, context: int = 0) -> TextRequest:
    """The request body of ``/v1/chat/completions`` (``chat``) or ``/v1/completions``, checked.
    ``ceiling``: the largest max_tokens; ``context``: the window the job must keep to (0: its own)."""
    try:
        body = parse_json_strict(raw, "request")
    except FormatError:
        # a fixed phrase: the parser's own words can carry the caller's bytes (a repeated key) or
        # Python's (a RecursionError)
        raise _Invalid(_NOT_JSON) from None
    if not isinstance(body, dict):
        raise _Invalid("the body must be a JSON object")
    return _checked(body, chat=chat, ceiling=ceiling, context=context)


def _checked(body: dict[str, Any], *, chat: bool, ceiling: int, context: int) -> TextRequest:
    """:func:`parse_text_request` on the parsed body."""
    allowed = _CHAT if chat else _COMPLETION
    unsupported = sorted(set(body) - allowed)
    if unsupported:
        name = _shown_name(unsupported[0])
        raise _Invalid("unsupported parameter" + (f": {name}" if name else ""), name)
    for key, default in _DEFAULTS.items():
        if key in allowed and body.get(key, default) not in (default, None):
            raise _Invalid(f"{key} is supported only as {json.dumps(default)}", key)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Invalid("model is required", "model")
    user = _optional(body, "user")
    if user is not None and not isinstance(user, str):
        raise _Invalid("user must be a string", "user")
    stream = _optional(body, "stream")
    if stream is not None and not isinstance(stream, bool):
        raise _Invalid("stream must be a boolean", "stream")
    options = _optional(body, "stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _Invalid("stream_options is only allowed with stream: true", "stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise _Invalid("stream_options takes only include_usage", "stream_options")
        usage = options.get("include_usage", False)
        if not isinstance(usage, bool):
            raise _Invalid("stream_options.include_usage must be a boolean", "stream_options")
        include_usage = usage
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    if chat:
        messages = _messages(body.get("messages"), context)
        size = sum(len(m["content"].encode("utf-8", "surrogatepass")) for m in messages)
        asked = _count(body, "max_completion_tokens")
        if asked is None:
            asked = _count(body, "max_tokens")
        elif _count(body, "max_tokens") is not None:
            raise _Invalid("give max_tokens or max_completion_tokens, not both", "max_tokens")
        default = ceiling
    else:
        value = body.get("prompt")
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str):
            raise _Invalid("prompt must be a string (or an array of one string)", "prompt")
        prompt = value
        size = len(prompt.encode("utf-8", "surrogatepass"))
        asked = _count(body, "max_tokens")
        default = min(_COMPLETION_DEFAULT_MAX, ceiling)
    max_tokens = default if asked is None else asked
    if max_tokens < 1:
        raise _Invalid("max_tokens must be at least 1", "max_tokens")
    if max_tokens > ceiling:
        raise _Invalid(f"max_tokens is above this model's limit of {ceiling}", "max_tokens")
    seed = _count(body, "seed")
    if seed is not None and seed < 0:
        raise _Invalid("seed must be >= 0", "seed")
    try:
        generate = build_request(
            messages=messages, prompt=prompt, max_tokens=max_tokens,
            temperature=_number(body, "temperature", 1.0),
            top_p=_number(body, "top_p", 1.0), seed=seed, stop=_stop(body), context=context,
        )  # fmt: skip
    except ValueError as exc:
        raise _Invalid(str(exc).removeprefix("generate: ")) from None
    return TextRequest(model, generate, bool(stream), include_usage, size)


# -- helpers for both endpoints --------------------------------------------------------------


def _reserve(state: GatewayState, lane: TextLane, request: TextRequest) -> int:
    """Tokens to reserve before generating: max_tokens plus an estimate of the prompt."""
    estimate = math.ceil(request.prompt_bytes / 4)
    if lane.context:
        estimate = min(estimate, lane.context)
    return int(request.generate["max_tokens"]) + estimate


#: the largest window a request can give the job (its ``context`` field is below 2**31)
_MAX_WINDOW: Final = 2**31 - 1


def _window(lane: TextLane, tokens_per_minute: int) -> int:
    """The tokens one generation may take, its prompt and max_tokens together, as the model's own
    tokenizer counts them: the lane's context, and never more than a minute of the tenant's token
    budget. The reservation only estimates the prompt (a quarter of its bytes: the chat template's
    tokens, or text the model's tokenizer cuts finer, are not in it); the job refuses a request
    above this window after counting its prompt, before it runs anything (outside review 25)."""
    window = min(tokens_per_minute, _MAX_WINDOW)
    return min(window, lane.context) if lane.context else window


def _spent(window: int, done: Generation | None, reserved: int) -> int:
    """Tokens the generation used: the job's prompt count (a claim: at most the request's
    ``window``, or the reservation when there is none) plus the completion tokens the host counted."""
    if done is None:
        return reserved
    bound = window or reserved
    return min(done.prompt_tokens, bound) + done.completion_tokens


def _usage(done: Generation, window: int) -> dict[str, int]:
    prompt = min(done.prompt_tokens, window) if window else done.prompt_tokens
    return {"prompt_tokens": prompt, "completion_tokens": done.completion_tokens,
            "total_tokens": prompt + done.completion_tokens}  # fmt: skip


def _finish(done: Generation) -> str:
    return "length" if done.finish == "length" else "stop"


def _context_refusal(call: _Call, lane: TextLane, done: Generation) -> _Refused:
    """The job said the prompt does not fit the request's window: believed only when its count makes
    that true. Beyond the model's context it is a context refusal; within it, the window was a
    minute of the tenant's token budget (:func:`_window`)."""
    max_tokens, needed = call.max_tokens, done.prompt_tokens + call.max_tokens
    if call.window and needed <= call.window:
        raise WorkerCrashed("the worker claimed a context overflow that its own counts contradict")
    if call.budget and needed > call.budget and (not lane.context or needed <= lane.context):
        return _Refused(
            _oai(400, f"the prompt ({done.prompt_tokens} tokens) and max_tokens ({max_tokens}) exceed the "
                      f"tenant's budget of {call.budget} tokens per minute", param="max_tokens"),
            "denied:tokens",
        )  # fmt: skip
    return _Refused(
        _oai(400, f"the prompt ({done.prompt_tokens} tokens) and max_tokens ({max_tokens}) do not fit this "
                  f"model's context of {lane.context or 'unknown'} tokens", param="messages"),
        "denied:context",
    )  # fmt: skip


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body was read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@dataclass
class _Call:
    """What a text request holds while it runs, released once at the end."""

    state: GatewayState
    who: Any = None
    name: str = ""
    request_id: str = ""
    entered: bool = False
    generating: bool = False
    reserved: int = 0
    lane: TextLane | None = None
    run: TextRun | None = None
    max_tokens: int = 0
    #: the request's window (:func:`_window`) and the tenant's tokens per minute it came from
    window: int = 0
    budget: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: the outcome row was written (or is being written)
    ended: bool = False
    #: the model's guard policy (None: not guarded), what it decided, the pseudonyms to restore
    policy: GuardPolicy | None = None
    trail: GuardTrail = field(default_factory=GuardTrail)
    pseudonyms: Pseudonyms = field(default_factory=Pseudonyms)

    @property
    def holds_output(self) -> bool:
        """Whether the answer is checked before the caller sees any of it."""
        return self.policy is not None and self.policy.checks_output

    def release(self) -> None:
        state, who = self.state, self.who
        if who is None:
            return
        if self.run is not None:
            self.run.cancel()  # no-op once it ended
        if self.reserved and self.lane is not None:
            done = self.run.result if self.run is not None else None
            used = _spent(self.window, done, self.reserved) if self.run is not None else 0
            background(state.limiter, _settle, state, who.tenant, used - self.reserved)
            self.reserved = 0
            if done is None and self.run is not None:
                self.completion_tokens = self.run.received  # it failed before its count came
            if done is not None:
                self.prompt_tokens, self.completion_tokens = (
                    _usage(done, self.window)["prompt_tokens"],
                    done.completion_tokens,
                )
                state.metrics.child(state.metrics.tokens, who.tenant, self.name, "prompt").inc(
                    self.prompt_tokens
                )
                state.metrics.child(state.metrics.tokens, who.tenant, self.name, "completion").inc(
                    done.completion_tokens
                )
        if self.generating:
            background(state.limiter, state.limiter.leave_generation, who.tenant)
            self.generating = False
        if self.entered:
            background(state.limiter, state.limiter.leave, who.tenant)
            state.metrics.child(state.metrics.in_flight, who.tenant).dec()
            self.entered = False


def _settle(state: GatewayState, tenant: str, delta: int) -> None:
    """Charge (or refund) a finished generation's tokens; with the state or budgets unreachable
    the reservation stands (a charge, never a refund)."""
    with contextlib.suppress(BackendUnavailable):
        state.limiter.settle_tokens(tenant, state.limits(tenant), delta, time.monotonic())


async def _admit(call: _Call, request: Request, chat: bool) -> tuple[TextRequest, TextLane]:
    """Every check before the worker: authentication, budgets, the body; the audit row 'started'."""
    state = call.state
    call.who = who = await _auth(state, request)
    limits = await offload(state.store, state.limits, who.tenant)
    if not await offload(state.limiter, state.limiter.enter, who.tenant, limits):
        raise _limited(state, who.tenant, Admit(False, 1.0, "concurrency"))
    call.entered = True
    state.metrics.child(state.metrics.in_flight, who.tenant).inc()
    admit = await offload(state.limiter, state.limiter.take_request, who.tenant, limits, time.monotonic())
    if not admit.allowed:
        raise _limited(state, who.tenant, admit)
    deadline = asyncio.get_running_loop().time() + state.config.server.request_timeout_seconds
    try:
        async with asyncio.timeout_at(deadline):
            raw = await _body(request, state.config.server.max_body_bytes)
    except TimeoutError as exc:
        raise _Refused(_error(504), "failed:timeout") from exc
    kind, name, detail = await _read(state, who.tenant, raw, chat, deadline)
    if kind == "refused":
        raise _Refused(_oai(400, name, param=detail), "denied:malformed")
    model = _model_for(state, who, name)
    call.name = name
    lane = state.text_lanes.get((who.tenant, name))
    if lane is None or kind == "model":
        raise _Refused(_oai(400, f"model {name!r} is not a text model; call it on /v2", param="model"),
                       "denied:malformed")  # fmt: skip
    if kind == "invalid":
        raise _Refused(_oai(400, detail[0], param=detail[1]), "denied:malformed")
    parsed: TextRequest = detail
    if model.guard is not None:
        # before any budget is taken: the worker sees only what the input guard left
        call.policy = model.guard
        parsed, call.pseudonyms = await guard_input(
            state, who.tenant, name, model.guard, parsed, deadline, call.trail
        )
    if not await offload(state.limiter, state.limiter.enter_generation, who.tenant, limits):
        raise _limited(state, who.tenant, Admit(False, 1.0, "generations"))
    call.generating = True
    reserve = _reserve(state, lane, parsed)
    if reserve > limits.tokens_per_minute:
        raise _Refused(
            _oai(400, f"max_tokens and the prompt (about {reserve} tokens) exceed the tenant's budget of "
                      f"{limits.tokens_per_minute} tokens per minute", param="max_tokens"),
            "denied:tokens",
        )  # fmt: skip
    admit = await offload(
        state.limiter, state.limiter.take_tokens, who.tenant, limits, reserve, time.monotonic()
    )
    if not admit.allowed:
        raise _limited(state, who.tenant, admit)
    call.reserved, call.lane, call.max_tokens = reserve, lane, int(parsed.generate["max_tokens"])
    # the job holds the request to the window with the model's own count of the prompt
    call.window, call.budget = _window(lane, limits.tokens_per_minute), limits.tokens_per_minute
    parsed = replace(parsed, generate={**parsed.generate, "context": call.window})
    try:
        await _audit(state, who, name, call.request_id, "started", 0, deadline=deadline)
    except AuditUnavailable:
        raise _Refused(_error(503, text=AUDIT_UNAVAILABLE), "failed:audit") from None
    return parsed, lane


#: what :func:`read_text_body` found: ("refused", message, None) before a model name was found;
#: ("model", name, None) for a name that is none of the tenant's text models; ("invalid", name,
#: (message, param)); ("parsed", name, TextRequest). Plain data: it comes back from a codec process.
BodyOutcome = tuple[str, str, Any]


def read_text_body(raw: bytes, chat: bool, models: Mapping[str, tuple[int, int]]) -> BodyOutcome:
    """Parse a text request's body once: its ``model`` (for the 404/403 checks, made by the caller)
    and, for one of ``models`` (name -> (max_tokens ceiling, context)), the checked request. Runs
    inline for a small body, in the tenant's codec process for a large one (never raises)."""
    try:
        body = parse_json_strict(raw, "request")
    except FormatError:
        return ("refused", _NOT_JSON, None)
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        return ("refused", "model is required", "model")
    if model not in models:
        return ("model", model, None)
    ceiling, context = models[model]
    try:
        return ("parsed", model, _checked(body, chat=chat, ceiling=ceiling, context=context))
    except _Invalid as exc:
        return ("invalid", model, (str(exc), exc.param))


def _text_models(state: GatewayState, tenant: str) -> dict[str, tuple[int, int]]:
    """The tenant's text models: name -> (the largest max_tokens, the context window; 0: unknown)."""
    out = {}
    for (owner, name), lane in state.text_lanes.items():
        model = state.config.model(name)
        if owner == tenant and model is not None:
            ceiling = min(model.max_tokens, lane.context) if lane.context else model.max_tokens
            out[name] = (ceiling, lane.context)
    return out


async def _read(state: GatewayState, tenant: str, raw: bytes, chat: bool, deadline: float) -> BodyOutcome:
    """:func:`read_text_body`, off the event loop for a body above ``offload_bytes`` (a large JSON
    parse holds the loop for a second: every tenant would wait)."""
    models = _text_models(state, tenant)
    if len(raw) <= state.config.server.offload_bytes:
        return read_text_body(raw, chat, models)
    try:
        outcome: BodyOutcome = await state.codecs.run(tenant, deadline, read_text_body, raw, chat, models)
    except TimeoutError:
        raise _Refused(_error(504), "failed:timeout") from None
    except CodecUnavailable:
        raise _Refused(_error(503, text=CODEC_UNAVAILABLE), "failed:codec") from None
    return outcome


async def _start(call: _Call, lane: TextLane, parsed: TextRequest, deadline: float) -> TextRun:
    try:
        call.run = await lane.open(parsed.generate, deadline)
    except WorkerTimeout:
        raise _Refused(_error(504), "failed:timeout") from None
    except WorkerCrashed:
        raise _Refused(_error(503), "failed:worker") from None
    return call.run


async def _end(call: _Call, decision: str, response: Response) -> Response:
    """Release the budgets and write the outcome row (with the token counts); once per request.
    An answer whose outcome row cannot be written is not delivered: the caller gets a 503."""
    if call.ended:
        return response
    call.ended = True
    if not await _record(call, decision, response.status_code):
        decision, response = "failed:audit", _oai(503, AUDIT_UNAVAILABLE, {"x-request-id": call.request_id})
    _tally(call, decision, response.status_code)
    return response


async def _outcome(call: _Call, decision: str, status: int) -> None:
    """A stream's end (its answer is already out): the outcome row, the metrics."""
    await _record(call, decision, status)
    _tally(call, decision, status)


async def _record(call: _Call, decision: str, status: int) -> bool:
    """Release the budgets, then write the outcome row; False when it could not be written.

    A generation stopped early (client gone, deadline) is first waited for (it stops between two
    tokens, or is killed within KILL_AFTER): its row and its charge then hold the tokens really
    generated, not nothing (a client that hung up just before the end would get a whole answer
    recorded as 0 tokens), and the generation counter is held until the worker is free."""
    run = call.run
    if run is not None and not run.ended.is_set():
        run.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_AFTER + 1.0):
                await run.ended.wait()
    call.release()
    try:
        await _audit(call.state, call.who, call.name, call.request_id, decision, status,
                     tokens=(call.prompt_tokens, call.completion_tokens), guard=call.trail.audit())  # fmt: skip
    except AuditUnavailable:
        return False
    return True


def _tally(call: _Call, decision: str, status: int) -> None:
    state = call.state
    tenant = call.who.tenant if call.who is not None else ""
    label = _model_label(state, call.name) if decision != "denied:not-found" else ""
    state.metrics.child(state.metrics.requests, tenant, label, str(status)).inc()
    _log.info("generate", extra={"request_id": call.request_id, "tenant": tenant, "model": label,
                                 "status": status, "decision": decision,
                                 "prompt_tokens": call.prompt_tokens,
                                 "completion_tokens": call.completion_tokens,
                                 **({"guard": call.trail.audit()} if call.trail.directions else {})})  # fmt: skip


def _chunk(kind: str, call_id: str, created: int, name: str, choices: list[dict[str, Any]],
           usage: dict[str, int] | None = None) -> bytes:  # fmt: skip
    body: dict[str, Any] = {
        "id": call_id,
        "object": kind,
        "created": created,
        "model": name,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n\n"


async def _handle(request: Request, chat: bool) -> Response:
    state: GatewayState = request.app.state.gateway
    call = _Call(state, request_id=uuid.uuid4().hex)
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.config.server.generation_timeout_seconds
    watcher: asyncio.Task[None] | None = None
    try:
        parsed, lane = await _admit(call, request, chat)
        # from here a client that hangs up ends the request at once: not queued for a worker, not
        # generating for nobody (the stream, once returned, notices on its own)
        watcher = loop.create_task(_disconnected(request))
        run = await _unless_gone(_start(call, lane, parsed, deadline), watcher)
        first = await _unless_gone(_first(run, deadline), watcher)
        done = run.result if first is None else None
        if done is not None and done.finish == "context":
            raise _context_refusal(call, lane, done)
        created = int(time.time())
        call_id = ("chatcmpl-" if chat else "cmpl-") + call.request_id
        if parsed.stream:
            watcher.cancel()  # the response reads the connection from now on
            # from here the stream ends the request (releases, outcome row), whenever it ends
            stream = _stream(call, lane, run, first, parsed, chat, call_id, created, deadline)
            headers = {"x-request-id": call.request_id, "cache-control": "no-store"}
            return _EventStream(call, stream, media_type="text/event-stream", headers=headers)
        watcher.add_done_callback(lambda _t: run.cancel())
        text = [] if first is None else [first]
        async with asyncio.timeout_at(deadline):
            async for piece in run.pieces():
                text.append(piece)
        done = run.result
        assert done is not None
        if done.finish == "context":
            raise _context_refusal(call, lane, done)
        if done.finish == "cancelled":
            raise _Refused(_oai(499, "client closed the request"), "failed:disconnected")
        call.release()
        usage = _usage(done, call.window)
        content = "".join(text)
        if call.holds_output:
            assert call.policy is not None
            content = await guard_output(state, call.who.tenant, call.name, call.policy, content,
                                         call.pseudonyms, deadline, call.trail)  # fmt: skip
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                                      "logprobs": None, "finish_reason": _finish(done)}  # fmt: skip
        else:
            choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": _finish(done)}
        body = {"id": call_id, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": call.name, "choices": [choice], "usage": usage}  # fmt: skip
        response = Response(
            json.dumps(body, separators=(",", ":"), ensure_ascii=True), media_type="application/json"
        )
        decision = "allowed"
        state.metrics.child(state.metrics.latency, call.who.tenant, call.name).observe(
            time.perf_counter() - started
        )
    except _Refused as refused:
        response, decision = _as_openai(refused.response), refused.decision
    except TimeoutError:
        response, decision = _oai(504, "request timed out"), "failed:timeout"
    except ModelFailed:
        # the job refused this request (its chat template raised, say) and serves on: the
        # model's words are not echoed
        response, decision = _oai(400, MODEL_REFUSED, param="messages" if chat else "prompt"), "failed:model"
    except WorkerCrashed:
        response, decision = _oai(503, "model worker unavailable; it is being restarted"), "failed:worker"
    except BackendUnavailable:
        response, decision = _oai(503, STATE_UNAVAILABLE), "failed:state"
    except Exception as exc:
        _log.error("request failed", extra={"request_id": call.request_id, "error": type(exc).__name__})
        response, decision = _oai(500, "internal error"), "failed:internal"
    except asyncio.CancelledError:
        call.release()
        # handed to the audit writer: this task may not await any more
        post_audit(
            state,
            _entry(
                state, call.who, call.name, call.request_id, "failed:cancelled", 499, guard=call.trail.audit()
            ),
        )
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
    response.headers["x-request-id"] = call.request_id
    return await _end(call, decision, response)


async def _unless_gone(step: Coroutine[Any, Any, _T], gone: asyncio.Task[None]) -> _T:
    """``step``'s result, unless the client hangs up first (``gone`` ends): then ``step`` is
    cancelled and the request ends as a 499."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await task  # a worker it took is back with the lane; a run it started is in the call
    raise _Refused(_oai(499, "client closed the request"), "failed:disconnected")


async def _first(run: TextRun, deadline: float) -> str | None:
    """The first non-empty piece, or None when the generation ended without one."""
    async with asyncio.timeout_at(deadline):
        async for piece in run.pieces():
            if piece:
                return piece
    return None


async def _stream(
    call: _Call, lane: TextLane, run: TextRun, first: str | None, parsed: TextRequest, chat: bool,
    call_id: str, created: int, deadline: float,
) -> AsyncIterator[bytes]:  # fmt: skip
    kind = "chat.completion.chunk" if chat else "text_completion"
    name = call.name
    decision, status = "allowed", 200

    def piece_chunk(text: str) -> bytes:
        if chat:
            return _chunk(kind, call_id, created, name, [{"index": 0, "delta": {"content": text},
                                                          "logprobs": None, "finish_reason": None}])  # fmt: skip
        return _chunk(kind, call_id, created, name, [{"index": 0, "text": text, "logprobs": None,
                                                      "finish_reason": None}])  # fmt: skip

    try:
        if chat:
            yield _chunk(kind, call_id, created, name, [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                         "logprobs": None, "finish_reason": None}])  # fmt: skip
        held: list[str] | None = [] if call.holds_output else None
        if first is not None and held is not None:
            held.append(first)
        elif first is not None:
            yield piece_chunk(first)
        try:
            async with asyncio.timeout_at(deadline):
                async for piece in run.pieces():
                    if piece and held is not None:
                        held.append(piece)
                    elif piece:
                        yield piece_chunk(piece)
        except TimeoutError:
            decision, status = "failed:timeout", 504
            yield _error_event(504, "request timed out")
            return
        except ModelFailed:
            decision, status = "failed:model", 400
            yield _error_event(400, MODEL_REFUSED)
            return
        except WorkerCrashed:
            decision, status = "failed:worker", 503
            yield _error_event(503, "model worker failed")
            return
        if held is not None:
            # a guarded answer goes out in one piece once it is checked: a canary or PII split
            # across tokens is seen whole, and a withheld answer sends none of its text
            try:
                checked = await _checked_output(call, "".join(held), deadline)
            except _Refused as refused:
                decision, status = refused.decision, refused.response.status_code
                yield _error_event(status, _message(refused.response))
                return
            except Exception as exc:  # the answer is not sent unchecked, and the end is recorded
                _log.error(
                    "request failed", extra={"request_id": call.request_id, "error": type(exc).__name__}
                )
                decision, status = "failed:internal", 500
                yield _error_event(500, "internal error")
                return
            if checked:
                yield piece_chunk(checked)
        done = run.result
        assert done is not None
        finish = _finish(done)
        if chat:
            yield _chunk(kind, call_id, created, name, [{"index": 0, "delta": {}, "logprobs": None,
                                                         "finish_reason": finish}])  # fmt: skip
        else:
            yield _chunk(kind, call_id, created, name, [{"index": 0, "text": "", "logprobs": None,
                                                         "finish_reason": finish}])  # fmt: skip
        if parsed.include_usage:
            yield _chunk(kind, call_id, created, name, [], _usage(done, call.window))
        yield b"data: [DONE]\n\n"
    except BaseException:
        # the client went away (the task is cancelled) or the send failed: stop the generation now
        decision, status = "failed:disconnected", 499
        run.cancel()
        raise
    finally:
        _end_later(call, decision, status)


async def _checked_output(call: _Call, text: str, deadline: float) -> str:
    assert call.policy is not None and call.who is not None
    return await guard_output(call.state, call.who.tenant, call.name, call.policy, text, call.pseudonyms,
                              deadline, call.trail)  # fmt: skip


def _message(response: Response) -> str:
    """The fixed text of a refusal built by the shared helpers."""
    try:
        return str(json.loads(bytes(response.body))["error"])
    except (ValueError, KeyError, TypeError):
        return "error"


def _end_later(call: _Call, decision: str, status: int) -> None:
    """Stop the generation and write the outcome off the current (possibly cancelled) task."""
    if call.run is not None:
        call.run.cancel()
    if call.ended:
        return
    call.ended = True
    task = asyncio.get_running_loop().create_task(_outcome(call, decision, status))
    call.state.background.add(task)
    task.add_done_callback(call.state.background.discard)


class _EventStream(StreamingResponse):
    """A server-sent event stream that ends its request however the response ends: a client that
    left before the first byte was sent never starts the stream's generator (whose own ``finally``
    would have done it)."""

    def __init__(self, call: _Call, content: AsyncIterator[bytes], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._call = call

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            _end_later(self._call, "failed:disconnected", 499)


def _error_event(status: int, message: str) -> bytes:
    body = {
        "error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": None, "code": None}
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode("ascii") + b"\n\n"


async def chat_completions(request: Request) -> Response:
    return await _handle(request, chat=True)


async def completions(request: Request) -> Response:
    return await _handle(request, chat=False)


def _model_entry(state: GatewayState, name: str) -> dict[str, object]:
    record = state.admissions[name]
    return {"id": name, "object": "model", "created": int(record.time), "owned_by": "airlock"}


async def list_text_models(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    try:
        who = await _auth(state, request)
    except _Refused as refused:
        return _as_openai(refused.response)
    names = sorted(
        name for (tenant, name) in state.text_lanes
        if tenant == who.tenant and state.visible(tenant, name) and (not who.scopes or name in who.scopes)
    )  # fmt: skip
    return Response(
        json.dumps(
            {"object": "list", "data": [_model_entry(state, n) for n in names]}, separators=(",", ":")
        ),
        media_type="application/json",
    )


async def text_model(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    name = request.path_params["model"]
    try:
        who = await _auth(state, request)
        _model_for(state, who, name)
    except _Refused as refused:
        return _as_openai(refused.response)
    if (who.tenant, name) not in state.text_lanes:
        return _oai(404, "not found")
    # an extra field (clients keep it): the admission record, as in the KServe model metadata
    entry = {**_model_entry(state, name), "airlock": {"admission": _admission_view(state.admissions[name])}}
    return Response(json.dumps(entry, separators=(",", ":")), media_type="application/json")


OPENAI_ROUTES: Final = (
    ("/v1/chat/completions", chat_completions, ["POST"]),
    ("/v1/completions", completions, ["POST"]),
    ("/v1/models", list_text_models, ["GET"]),
    ("/v1/models/{model}", text_model, ["GET"]),
)
