"""The HTTP surface: KServe v2 routes on Starlette, with authentication, budgets and audit.

Order of checks for an inference call (each refusal is audited and counted):
401 unauthenticated -> 404 model not served to this tenant (the same answer as a model that does
not exist: nothing about other tenants leaks) -> 403 key not scoped for the model -> 429 tenant
concurrency cap -> 429 request budget -> 413 body cap -> 400 malformed tensors -> 429 tensor-byte
budget -> worker (504 deadline, 503 worker failure) -> 200.

Error bodies are ``{"error": "..."}`` (the KServe v2 shape) with fixed texts; only a 400 describes
the caller's own request. Never a traceback, a key, or another tenant's name.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airlock import __version__
from airlock.gateway._config import GatewayConfig, ModelConfig, TenantLimits
from airlock.gateway._keys import Authenticated, authenticate
from airlock.gateway._limiter import Admit, RateLimiter
from airlock.gateway._observe import Metrics
from airlock.gateway._store import AdmissionRecord, Store
from airlock.gateway._tensors import OutputError, TensorError, encode_outputs, parse_infer_request
from airlock.gateway._workers import Lane, WorkerCrashed, WorkerTimeout

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


def _error(status: int, detail: str | None = None, headers: Mapping[str, str] | None = None) -> Response:
    text = _TEXTS.get(status, "error")
    return _json({"error": f"{text}: {detail}" if detail else text}, status, headers)


class _Refused(Exception):
    def __init__(self, response: Response, decision: str) -> None:
        self.response, self.decision = response, decision


def _auth(state: GatewayState, request: Request) -> Authenticated:
    who = authenticate(state.store, request.headers.get("authorization"))
    mtls = state.config.tls is not None and state.config.tls.client_ca is not None
    # mTLS: the certificate (verified by the TLS layer against client_ca) must name the key's tenant
    if who is not None and mtls and request.scope.get("state", {}).get(CLIENT_CN_KEY) != who.tenant:
        who = None
    if who is None:
        state.metrics.unauthenticated.inc()
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
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        raise _Refused(_error(413, f"the limit is {cap} bytes"), "denied:body-size")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _Refused(_error(413, f"the limit is {cap} bytes"), "denied:body-size")
        chunks.append(chunk)
    return b"".join(chunks)


def _audit(
    state: GatewayState, who: Authenticated | None, model: str, request_id: str, decision: str, status: int
) -> None:
    record = state.admissions.get(model) if who is not None and state.visible(who.tenant, model) else None
    state.store.append_audit(
        time.time(), who.tenant if who else "", who.key_id if who else "", model,
        record.digest if record else "", request_id, decision, status,
    )  # fmt: skip


async def infer(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    name = request.path_params["model"]
    request_id = uuid.uuid4().hex
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.config.server.request_timeout_seconds
    who: Authenticated | None = None
    entered = False
    decision, response = "allowed", _error(500)
    try:
        who = _auth(state, request)
        model = _model_for(state, who, name)
        limits = state.limits(who.tenant)
        if not state.limiter.enter(who.tenant, limits):
            raise _limited(state, who.tenant, Admit(False, 1.0, "concurrency"))
        entered = True
        state.metrics.in_flight.labels(who.tenant).inc()
        admit = state.limiter.take_request(who.tenant, limits, time.monotonic())
        if not admit.allowed:
            raise _limited(state, who.tenant, admit)
        try:
            async with asyncio.timeout_at(deadline):
                body = await _body(request, state.config.server.max_body_bytes)
        except TimeoutError as exc:
            raise _Refused(_error(504), "failed:timeout") from exc
        try:
            client_id, inputs = parse_infer_request(body, model.inputs)
        except TensorError as exc:
            raise _Refused(_error(400, str(exc)), "denied:malformed") from exc
        admit = state.limiter.take_bytes(
            who.tenant, limits, sum(a.nbytes for a in inputs.values()), time.monotonic()
        )
        if not admit.allowed:
            if sum(a.nbytes for a in inputs.values()) > limits.tensor_bytes_per_minute:
                raise _Refused(
                    _error(413, "tensors exceed the tenant's per-minute byte budget"), "denied:tensor-size"
                )
            raise _limited(state, who.tenant, admit)
        lane = state.lanes[(who.tenant, name)]
        try:
            outputs = await lane.infer(inputs, deadline)
        except WorkerTimeout as exc:
            state.metrics.restarts.labels(who.tenant, name, "timeout").inc()
            raise _Refused(_error(504), "failed:timeout") from exc
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
        try:
            encoded = encode_outputs(outputs)
        except OutputError as exc:
            raise _Refused(_error(502, "the model's output cannot be represented"), "failed:output") from exc
        body_out: dict[str, object] = {"model_name": name, "id": client_id or request_id, "outputs": encoded}
        response = _json(body_out)
    except _Refused as refused:
        decision, response = refused.decision, refused.response
    finally:
        if entered and who is not None:
            state.limiter.leave(who.tenant)
            state.metrics.in_flight.labels(who.tenant).dec()
    response.headers["x-request-id"] = request_id
    _audit(state, who, name, request_id, decision, response.status_code)
    elapsed = time.perf_counter() - started
    tenant = who.tenant if who else ""
    state.metrics.requests.labels(
        tenant, name if decision != "denied:not-found" else "", str(response.status_code)
    ).inc()
    if who is not None and decision == "allowed":
        state.metrics.latency.labels(tenant, name).observe(elapsed)
    _log.info("infer", extra={"request_id": request_id, "tenant": tenant, "model": name, "status": response.status_code,
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
        who = _auth(state, request)
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
        who = _auth(state, request)
        _model_for(state, who, name)
    except _Refused as refused:
        return refused.response
    lane = state.lanes.get((who.tenant, name))
    ready = lane is not None and lane.ready
    return _json({"name": name, "ready": ready}, 200 if ready else 503)


async def list_models(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    try:
        who = _auth(state, request)
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
    ok = bool(state.lanes) and all(lane.ready for lane in state.lanes.values())
    return _json({"ready": ok}, 200 if ok else 503)


async def server_metadata(request: Request) -> Response:
    return _json({"name": "airlock", "version": __version__, "extensions": ["airlock-admission"]})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _error(status if status in _TEXTS else 500)


async def _server_error(request: Request, exc: Exception) -> Response:
    _log.error("unhandled error", extra={"path": request.url.path, "error": type(exc).__name__})
    return _error(500)


def build_app(state: GatewayState) -> Starlette:
    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models", list_models, methods=["GET"]),
        Route("/v2/models/{model}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
    ]
    handlers: Mapping[Any, Any] = {HTTPException: _http_error, Exception: _server_error}
    app = Starlette(routes=routes, exception_handlers=dict(handlers))
    app.state.gateway = state
    return app
