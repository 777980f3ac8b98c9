"""The HTTP surface: KServe v2 routes on Starlette, with authentication, budgets and audit.

Before any of this, :mod:`._guard` has applied the connection caps, the header deadline, the strict
header checks and the per-address token bucket (those refusals are counted, not audited).

Order of checks for an inference call (each refusal is audited and counted):
401 unauthenticated -> 404 model not served to this tenant (the same answer as a model that does
not exist: nothing about other tenants leaks) -> 403 key not scoped for the model -> 429 tenant
concurrency cap -> 429 request budget -> 413 body cap -> 400 malformed tensors -> 429 tensor-byte
budget -> audit row "started" (503 when it cannot be written: nothing runs unaudited) -> worker
(504 deadline, 503 worker failure, 400 when the model raised on the inputs) -> 200. Whatever fails after that, the request ends with its
outcome row; an unexpected exception is a 500 with a fixed text, audited like any other outcome.

Nothing a caller sent is stored or labelled verbatim unless it was checked first: the model name in
audit rows, metric labels and logs is a configured model's name or empty.

Error bodies are ``{"error": "..."}`` (the KServe v2 shape) with fixed texts; only a 400 describes
the caller's own request, with fixed phrases. Never a traceback, an exception's text, a key, or
another tenant's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from airlock import __version__
from airlock.gateway._audit_writer import AuditWriter
from airlock.gateway._backend import BackendUnavailable
from airlock.gateway._bytes import is_bytes, tensor_bytes
from airlock.gateway._codec import Codecs, CodecUnavailable
from airlock.gateway._config import GatewayConfig, ModelConfig, TenantLimits
from airlock.gateway._guard import ConnectionGuard, PreAuth
from airlock.gateway._guard_trail import GuardTrail
from airlock.gateway._keys import Authenticated, authenticate
from airlock.gateway._limiter import Admit, RateLimiter
from airlock.gateway._observe import Metrics
from airlock.gateway._offload import background, offload
from airlock.gateway._pacing import Paced
from airlock.gateway._store import AdmissionRecord, AuditEntry, AuditUnavailable, Store
from airlock.gateway._tensors import (
    MAX_BINARY_HEADER,
    InferRequest,
    OutputError,
    TensorError,
    encode_reply,
    parse_infer_request,
)
from airlock.gateway._text_lane import TextLane
from airlock.gateway._workers import Lane, ModelFailed, WorkerCrashed, WorkerTimeout
from airlock.guard import Pseudonyms

__all__ = ["GatewayState", "build_app"]

_log = logging.getLogger("airlock.gateway")

#: where the mTLS peer certificate's CN is put by the server protocol (see ._server)
CLIENT_CN_KEY: Final = "airlock_client_cn"


@dataclass
class GatewayState:
    config: GatewayConfig
    store: Store
    limiter: RateLimiter
    metrics: Metrics
    #: admitted models only
    admissions: dict[str, AdmissionRecord]
    lanes: dict[tuple[str, str], Lane] = field(default_factory=dict)
    #: text models' lanes (the OpenAI-compatible endpoints, :mod:`._openai`)
    text_lanes: dict[tuple[str, str], TextLane] = field(default_factory=dict)
    #: tasks that finish a request after its handler returned (a stream's outcome row)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    codecs: Codecs = field(default_factory=Codecs)
    #: False after an audit row could not be written, until one is written again (readiness)
    audit_ok: bool = True
    preauth: PreAuth | None = None
    #: what breaks the audit chain at the recorded head (rows cut or replaced), None while intact
    audit_chain: str | None = None
    #: the group-commit writer (None: rows are written inline, as in unit tests)
    audit: AuditWriter | None = None
    guard: ConnectionGuard | None = None
    #: the admin port's own connection guard
    admin_guard: ConnectionGuard | None = None
    #: the outermost middleware: request and reply bodies move in slices metered per loop turn
    pacing: Paced | None = None

    def limits(self, tenant: str) -> TenantLimits:
        record = self.store.tenant(tenant)
        return record.limits if record is not None and record.limits is not None else self.config.defaults

    def visible(self, tenant: str, model: str) -> ModelConfig | None:
        config = self.config.model(model)
        if config is None or tenant not in config.tenants or model not in self.admissions:
            return None
        return config


def _json(
    body: Mapping[str, object], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


_TEXTS: Final = {
    400: "invalid request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
    429: "rate limit exceeded",
    500: "internal error",
    502: "bad gateway",
    503: "model worker unavailable; it is being restarted",
    504: "request timed out",
}
#: replies above this size are streamed in slices of _SLICE bytes
_STREAM_ABOVE: Final = 1024 * 1024
_SLICE: Final = 256 * 1024
AUDIT_UNAVAILABLE: Final = "audit log unavailable; the request was not served"
#: PostgreSQL ([state] url) or Redis ([limits] url) cannot be reached: refused, never served unchecked
STATE_UNAVAILABLE: Final = "state service unavailable; the request was not served"
#: no answer yet
_UNSET: Final = Response(b"", status_code=500)
CODEC_UNAVAILABLE: Final = "request decoder unavailable; retry"


def _error(
    status: int, detail: str | None = None, headers: Mapping[str, str] | None = None, *, text: str = ""
) -> Response:
    text = text or _TEXTS.get(status, "error")
    return _json({"error": f"{text}: {detail}" if detail else text}, status, headers)


class _Refused(Exception):
    def __init__(self, response: Response, decision: str) -> None:
        self.response, self.decision = response, decision


async def _auth(state: GatewayState, request: Request) -> Authenticated:
    who = await offload(state.store, authenticate, state.store, request.headers.get("authorization"))
    mtls = state.config.tls is not None and state.config.tls.client_ca is not None
    # mTLS: the certificate (verified by the TLS layer against client_ca) must name the key's tenant
    if who is not None and mtls and request.scope.get("state", {}).get(CLIENT_CN_KEY) != who.tenant:
        who = None
    if who is None:
        state.metrics.unauthenticated.inc()
        if state.preauth is not None:
            state.preauth.failed(request.scope.get("client"))
        raise _Refused(_error(401, headers={"WWW-Authenticate": "Bearer"}), "denied:unauthenticated")
    return who


def _model_for(state: GatewayState, who: Authenticated, name: str) -> ModelConfig:
    model = state.visible(who.tenant, name)
    if model is None:
        raise _Refused(_error(404), "denied:not-found")
    if who.scopes and name not in who.scopes:
        raise _Refused(_error(403), "denied:scope")
    return model


def _limited(state: GatewayState, tenant: str, admit: Admit) -> _Refused:
    state.metrics.limited.labels(tenant, admit.budget).inc()
    retry = str(max(1, math.ceil(admit.retry_after)))
    return _Refused(
        _error(429, admit.budget.replace("_", " "), {"Retry-After": retry}), f"limited:{admit.budget}"
    )


async def _body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    # isascii: str.isdigit() accepts digits int() refuses ("²" is Latin-1)
    if declared is not None and (not (declared.isascii() and declared.isdigit()) or int(declared) > cap):
        raise _Refused(_error(413, f"the limit is {cap} bytes"), "denied:body-size")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise _Refused(_error(413, f"the limit is {cap} bytes"), "denied:body-size")
            chunks.append(chunk)
    except ClientDisconnect:
        # the caller hung up (or h11 refused its framing and closed): nobody to answer, nothing wrong here
        raise _Refused(_error(499, text="client closed the request"), "failed:disconnected") from None
    return b"".join(chunks)


def _header_length(request: Request) -> int | None:
    """``Inference-Header-Content-Length`` (the binary tensor extension), strictly: digits only."""
    raw = request.headers.get("inference-header-content-length")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise _Refused(
            _error(400, "Inference-Header-Content-Length must be a decimal number"), "denied:malformed"
        )
    return int(raw)


def _model_label(state: GatewayState, name: str) -> str:
    """The model name as stored and labelled: a configured model's name, else empty (never the caller's)."""
    return name if state.config.model(name) is not None else ""


def _entry(
    state: GatewayState, who: Authenticated | None, model: str, request_id: str, decision: str, status: int,
    tokens: tuple[int, int] = (0, 0), guard: str = "",
) -> AuditEntry:  # fmt: skip
    record = state.admissions.get(model) if who is not None and state.visible(who.tenant, model) else None
    return AuditEntry(
        time.time(), who.tenant if who else "", who.key_id if who else "", _model_label(state, model),
        record.digest if record else "", request_id, decision, status, *tokens, guard,
    )  # fmt: skip


async def _audit(
    state: GatewayState, who: Authenticated | None, model: str, request_id: str, decision: str, status: int,
    tokens: tuple[int, int] = (0, 0), guard: str = "", deadline: float | None = None,
) -> None:  # fmt: skip
    """Append one audit row; raise AuditUnavailable (and mark the gateway not ready) when it cannot,
    or when it is not committed by ``deadline`` (loop time; default: ``request_timeout_seconds``
    from now, the bound of an outcome row whose request's own deadline may have passed)."""
    entry = _entry(state, who, model, request_id, decision, status, tokens, guard)
    try:
        if state.audit is not None:
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + state.config.server.request_timeout_seconds
            await state.audit.append(entry, deadline)
        else:
            state.store.append_audit_many([entry])
    except AuditUnavailable:
        if state.audit_ok:
            _log.error("audit log unavailable: refusing inference until a row can be written")
        state.audit_ok = False
        state.metrics.audit_failures.inc()
        raise
    state.audit_ok = True


def post_audit(state: GatewayState, entry: AuditEntry) -> None:
    """Record a row nobody can wait for (a request cancelled at shutdown): queued to the writer,
    never committed on the event loop (written inline only without a writer, as in unit tests)."""
    if state.audit is not None:
        state.audit.post(entry)
        return
    with contextlib.suppress(AuditUnavailable):
        state.store.append_audit_many([entry])


def _may_hold_bytes(body: bytes, header_length: int) -> bool:
    """Whether a binary request's header may declare a BYTES tensor, whose elements are split one by
    one in Python (then a large body is parsed in the tenant's codec, off the loop). Conservative:
    any JSON escape in the header (``"\\u0042YTES"``) counts as one."""
    header = body[: min(header_length, MAX_BINARY_HEADER + 1)]
    return b"BYTES" in header or b"\\" in header


async def _parse(
    state: GatewayState,
    tenant: str,
    model: ModelConfig,
    body: bytes,
    header_length: int | None,
    deadline: float,
) -> InferRequest:
    limit = state.config.server.max_body_bytes
    try:
        if len(body) <= state.config.server.offload_bytes or (
            header_length is not None and not _may_hold_bytes(body, header_length)
        ):
            return parse_infer_request(body, model.inputs, header_length, limit)
        return await state.codecs.parse(tenant, body, model.inputs, deadline, limit, header_length)
    except TensorError as exc:
        raise _Refused(_error(400, str(exc)), "denied:malformed") from None
    except TimeoutError:
        raise _Refused(_error(504), "failed:timeout") from None
    except CodecUnavailable:
        raise _Refused(_error(503, text=CODEC_UNAVAILABLE), "failed:codec") from None


async def _reply(
    state: GatewayState, tenant: str, name: str, reply_id: str, request: InferRequest,
    outputs: dict[str, Any], deadline: float,
) -> Response:  # fmt: skip
    if request.outputs:
        missing = [n for n, _ in request.outputs if n not in outputs]
        if missing:
            raise _Refused(
                _error(400, f"output {missing[0]!r} is not produced by the model"), "denied:malformed"
            )
        outputs = {n: outputs[n] for n, _ in request.outputs}
    binary = frozenset(n for n in outputs if request.binary_output) | frozenset(
        n for n, wanted in request.outputs if wanted
    )
    chunks: Sequence[bytes | memoryview]
    # a JSON number takes up to ~25 characters per 4-8 bytes, and every BYTES element (JSON or
    # binary) is a step of Python: large replies are encoded off the loop
    offload = state.config.server.offload_bytes
    # (a BYTES output's elements are summed only when there are few of them: no long loop here)
    cost = sum(
        (16 * a.size + (tensor_bytes(a) if 16 * a.size <= offload else 0))
        if is_bytes(a)
        else 4 * int(a.nbytes)
        for n, a in outputs.items()
        if n not in binary or is_bytes(a)
    )
    try:
        if cost <= offload:
            chunks, header = encode_reply(name, reply_id, outputs, binary)
        else:
            chunks, header = await state.codecs.encode(tenant, name, reply_id, outputs, binary, deadline)
    except OutputError:
        raise _Refused(_error(502, "the model's output cannot be represented"), "failed:output") from None
    except TimeoutError:
        raise _Refused(_error(504), "failed:timeout") from None
    except CodecUnavailable:
        raise _Refused(_error(503, text=CODEC_UNAVAILABLE), "failed:codec") from None
    headers = {} if header is None else {"Inference-Header-Content-Length": str(header)}
    media = "application/json" if header is None else "application/octet-stream"
    size = sum(len(c) for c in chunks)
    if size <= _STREAM_ABOVE:
        return Response(b"".join(chunks), media_type=media, headers=headers)
    # a large reply goes out in slices straight from the output buffers: each slice is one short
    # step of the event loop (TLS encryption included), so other tenants' requests interleave
    return StreamingResponse(
        _slices(chunks), media_type=media, headers={**headers, "Content-Length": str(size)}
    )


async def _slices(chunks: Sequence[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        for start in range(0, len(view), _SLICE):
            yield view[start : start + _SLICE]


async def screen_bytes(
    state: GatewayState, tenant: str, model: ModelConfig, direction: str, tensors: dict[str, Any],
    deadline: float, trail: GuardTrail, pseudonyms: Pseudonyms,
) -> tuple[dict[str, Any], Pseudonyms]:  # fmt: skip
    """THE place where a KServe request's parsed tensors (``direction="input"``, after the shape
    and datatype checks, before the byte budget, the "started" audit row and the worker) and the
    model's outputs (``"output"``, before encoding) pass through the gateway: a guarded model's
    BYTES elements go through its guard (:mod:`._bytes_guard`), which returns the tensors to use
    or raises ``_Refused`` (400 / 502, fixed texts) with its audit decision."""
    if model.guard is None:
        return tensors, pseudonyms
    from airlock.gateway._bytes_guard import guard_tensors  # a guarded model only (it imports this module)

    return await guard_tensors(state, tenant, model, direction, tensors, deadline, trail, pseudonyms)


async def infer(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    name = request.path_params["model"]
    request_id = os.urandom(16).hex()  # 128 random bits as 32 hex digits (uuid4's object cost more)
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.config.server.request_timeout_seconds
    who: Authenticated | None = None
    entered = False
    # the answer is built once it is known (an error response built ahead cost as much as the
    # whole authentication step)
    decision, response = "allowed", _UNSET
    trail, pseudonyms = GuardTrail(), Pseudonyms()
    try:
        who = await _auth(state, request)
        model = _model_for(state, who, name)
        lane = state.lanes.get((who.tenant, name))
        if lane is None:
            raise _Refused(
                _error(400, "a text model: call it on /v1/chat/completions or /v1/completions"),
                "denied:malformed",
            )
        limits = await offload(state.store, state.limits, who.tenant)
        if not await offload(state.limiter, state.limiter.enter, who.tenant, limits):
            raise _limited(state, who.tenant, Admit(False, 1.0, "concurrency"))
        entered = True
        state.metrics.child(state.metrics.in_flight, who.tenant).inc()
        admit = await offload(state.limiter, state.limiter.take_request, who.tenant, limits, time.monotonic())
        if not admit.allowed:
            raise _limited(state, who.tenant, admit)
        header_length = _header_length(request)
        try:
            async with asyncio.timeout_at(deadline):
                body = await _body(request, state.config.server.max_body_bytes)
        except TimeoutError as exc:
            raise _Refused(_error(504), "failed:timeout") from exc
        parsed = await _parse(state, who.tenant, model, body, header_length, deadline)
        inputs, pseudonyms = await screen_bytes(
            state, who.tenant, model, "input", parsed.inputs, deadline, trail, pseudonyms
        )
        nbytes = parsed.nbytes
        admit = await offload(
            state.limiter, state.limiter.take_bytes, who.tenant, limits, nbytes, time.monotonic()
        )
        if not admit.allowed:
            if nbytes > limits.tensor_bytes_per_minute:
                raise _Refused(
                    _error(413, "tensors exceed the tenant's per-minute byte budget"), "denied:tensor-size"
                )
            raise _limited(state, who.tenant, admit)
        try:
            # written before the model runs: a request that cannot be audited is never served
            await _audit(state, who, name, request_id, "started", 0, deadline=deadline)
        except AuditUnavailable:
            raise _Refused(_error(503, text=AUDIT_UNAVAILABLE), "failed:audit") from None
        try:
            outputs = await lane.infer(inputs, deadline)
        except WorkerTimeout as exc:
            state.metrics.restarts.labels(who.tenant, name, "timeout").inc()
            raise _Refused(_error(504), "failed:timeout") from exc
        except ModelFailed:
            # the model's own message is not echoed: fixed phrases only
            raise _Refused(_error(400, "the model could not run on these inputs"), "failed:model") from None
        except WorkerCrashed as exc:
            state.metrics.restarts.labels(who.tenant, name, "crash").inc()
            _log.warning(
                "worker failed",
                extra={
                    "tenant": who.tenant,
                    "model": name,
                    "request_id": request_id,
                    "error": str(exc)[:500],
                },
            )
            raise _Refused(_error(503), "failed:worker") from exc
        outputs, _ = await screen_bytes(
            state, who.tenant, model, "output", outputs, deadline, trail, pseudonyms
        )
        response = await _reply(state, who.tenant, name, parsed.id or request_id, parsed, outputs, deadline)
    except _Refused as refused:
        decision, response = refused.decision, refused.response
    except BackendUnavailable:
        decision, response = "failed:state", _error(503, text=STATE_UNAVAILABLE)
    except Exception as exc:  # every request ends audited, with a fixed text
        _log.error("request failed", extra={"request_id": request_id, "error": type(exc).__name__})
        decision, response = "failed:internal", _error(500)
    except asyncio.CancelledError:
        # the server is shutting down past its grace period: record the end before unwinding
        # (handed to the writer: this task may not await any more)
        post_audit(state, _entry(state, who, name, request_id, "failed:cancelled", 499))
        raise
    finally:
        if entered and who is not None:
            background(state.limiter, state.limiter.leave, who.tenant)
            state.metrics.child(state.metrics.in_flight, who.tenant).dec()
    if response is _UNSET:  # not reached: every way out of the block above sets the answer
        decision, response = "failed:internal", _error(500)
    if decision != "failed:audit":
        try:
            await _audit(state, who, name, request_id, decision, response.status_code, guard=trail.audit())
        except AuditUnavailable:
            # the outcome cannot be recorded: the caller gets no result it could use unaudited
            decision, response = "failed:audit", _error(503, text=AUDIT_UNAVAILABLE)
    response.headers["x-request-id"] = request_id
    elapsed = time.perf_counter() - started
    tenant = who.tenant if who else ""
    label = _model_label(state, name) if decision != "denied:not-found" else ""
    state.metrics.child(state.metrics.requests, tenant, label, str(response.status_code)).inc()
    if who is not None and decision == "allowed":
        state.metrics.child(state.metrics.latency, tenant, name).observe(elapsed)
    _log.info("infer", extra={"request_id": request_id, "tenant": tenant, "model": label, "status": response.status_code,
                              "decision": decision, "ms": round(elapsed * 1000, 3)})  # fmt: skip
    return response


def _admission_view(record: AdmissionRecord) -> dict[str, object]:
    return {
        "digest": record.digest, "integrity": record.integrity, "verdict": record.verdict,
        "decision": record.decision, "reason": record.reason, "findings": list(record.findings),
        "time": record.time,
    }  # fmt: skip


async def model_metadata(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    name = request.path_params["model"]
    try:
        who = await _auth(state, request)
        model = _model_for(state, who, name)
    except _Refused as refused:
        return refused.response
    inputs = [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in model.inputs]
    return _json({
        "name": name, "versions": ["1"], "platform": model.runtime or "auto", "inputs": inputs, "outputs": [],
        "airlock": {"admission": _admission_view(state.admissions[name])},
    })  # fmt: skip


async def model_ready(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    name = request.path_params["model"]
    try:
        who = await _auth(state, request)
        _model_for(state, who, name)
    except _Refused as refused:
        return refused.response
    lane = state.lanes.get((who.tenant, name)) or state.text_lanes.get((who.tenant, name))
    ready = lane is not None and lane.ready
    return _json({"name": name, "ready": ready}, 200 if ready else 503)


async def list_models(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    try:
        who = await _auth(state, request)
    except _Refused as refused:
        return refused.response
    names = sorted(
        m.name for m in state.config.models
        if state.visible(who.tenant, m.name) and (not who.scopes or m.name in who.scopes)
    )  # fmt: skip
    return _json({"models": [{"name": n} for n in names]})


async def live(request: Request) -> Response:
    return _json({"live": True})


async def ready(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    lanes: list[Lane | TextLane] = [*state.lanes.values(), *state.text_lanes.values()]
    ok = (
        audit_ready(state) and backends_available(state) and bool(lanes) and all(lane.ready for lane in lanes)
    )
    return _json({"ready": ok}, 200 if ok else 503)


def audit_ready(state: GatewayState) -> bool:
    """The audit log takes rows (the last commit succeeded, none is stalled on a lock or the disk)
    and still reaches the head recorded in the head file (no rows cut or replaced)."""
    writable = state.audit.writable if state.audit is not None else state.audit_ok
    return writable and state.audit_chain is None


def backends_available(state: GatewayState) -> bool:
    """False while the shared state (PostgreSQL) or budgets (Redis) are marked down."""
    return all(getattr(backend, "available", True) for backend in (state.store, state.limiter))


async def server_metadata(request: Request) -> Response:
    extensions = ["airlock-admission", "binary_tensor_data"]
    return _json({"name": "airlock", "version": __version__, "extensions": extensions})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _error(status if status in _TEXTS else 500)


async def _backend_error(request: Request, exc: Exception) -> Response:
    return _error(503, text=STATE_UNAVAILABLE)


async def _server_error(request: Request, exc: Exception) -> Response:
    _log.error("unhandled error", extra={"path": request.url.path, "error": type(exc).__name__})
    return _error(500)


def build_app(state: GatewayState) -> ASGIApp:
    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models", list_models, methods=["GET"]),
        Route("/v2/models/{model}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
    ]
    from airlock.gateway._openai import OPENAI_ROUTES  # it builds on this module's helpers

    routes += [Route(path, endpoint, methods=methods) for path, endpoint, methods in OPENAI_ROUTES]
    handlers: Mapping[Any, Any] = {
        HTTPException: _http_error, BackendUnavailable: _backend_error, Exception: _server_error,
    }  # fmt: skip
    app = Starlette(routes=routes, exception_handlers=dict(handlers))
    app.state.gateway = state
    state.preauth = PreAuth(app, state.config.server)
    # outermost: every body, in and out (the pre-auth refusals' too), moves in metered slices
    state.pacing = Paced(state.preauth)
    return state.pacing
