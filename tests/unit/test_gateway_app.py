"""The gateway's HTTP surface (src/airlock/gateway/_app.py) over real HTTP, fast: uvicorn on a real
socket, a real SQLite store with real keys and audit chain, the real limiter and lanes; workers
compute in process (tests/unit/_gateway_server.py), so no test starts a sandbox.

Each refusal is pinned by its exact status, its fixed error text, its audit decision and the
fields of its audit row; each limit at N-1, N and N+1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from airlock import __version__
from airlock.gateway._app import CLIENT_CN_KEY
from airlock.gateway._config import TenantLimits, TlsConfig
from airlock.gateway._sqlite_store import SqliteStore
from airlock.gateway._workers import Lane
from tests.unit._gateway_server import DIGEST, HANG_SECONDS, Served, start

AUDIT_UNAVAILABLE = {"error": "audit log unavailable; the request was not served"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server, stop = start(tmp_path_factory.mktemp("gateway-app"))
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def gw(served: Served) -> Iterator[Served]:
    served.reset()
    _PORT[:] = [served.port]
    yield served
    served.reset()


_PORT: list[int] = []


def _exchange(method: str, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    """One request, head and body in one write, on a fresh connection; the reply read to the close.

    A refusal sent before the body was read closes the connection: a body that arrived after
    that close would make the kernel reset the connection, and a reset can discard the reply
    before the client reads it. Sent in one write, the body is always read before the close."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\n{lines}Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", _PORT[0]), timeout=20) as sock:
        sock.sendall(request)
        reply = bytearray()
        while chunk := sock.recv(1 << 20):
            reply += chunk
    top, _, rest = bytes(reply).partition(b"\r\n\r\n")
    status, *fields = top.decode("latin-1").split("\r\n")
    pairs = [(name, value) for name, _, value in (field.partition(": ") for field in fields)]
    return httpx.Response(int(status.split()[1]), headers=pairs, content=rest)


class _Client:
    """Requests with a tenant's key (see :func:`_exchange`)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def request(self, method: str, path: str, content: bytes = b"", **kw: Any) -> httpx.Response:
        return _exchange(method, path, {**self.headers, **kw.get("headers", {})}, content)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)


def _client(gw: Served, who: str | None = "acme") -> _Client:
    return _Client({"Authorization": f"Bearer {gw.tokens[who]}"} if who else {})


def _body(*rows: list[float], **extra: Any) -> dict[str, Any]:
    data = [v for row in rows for v in row]
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(rows), 4], "data": data}], **extra}


def _infer(
    gw: Served, body: Any, who: str | None = "acme", model: str = "affine", **kw: Any
) -> httpx.Response:
    with _client(gw, who) as client:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return client.post(f"/v2/models/{model}/infer", content=content, **kw)


def _rows(gw: Served, response: httpx.Response) -> list[tuple[str, str, str, str, str, int]]:
    """(tenant, key_id, model, digest, decision, status) of each audit row of this response."""
    rows = gw.rows(response.headers["x-request-id"])
    return [(r.tenant, r.key_id, r.model, r.model_digest, r.decision, r.status) for r in rows]


# server routes ----------------------------------------------------------------------------------


def test_server_metadata_liveness_and_compact_json(gw: Served) -> None:
    with _client(gw, None) as client:
        meta = client.get("/v2")
        assert meta.status_code == 200
        assert meta.headers["content-type"] == "application/json"
        assert (
            meta.content
            == json.dumps(
                {
                    "name": "airlock",
                    "version": __version__,
                    "extensions": ["airlock-admission", "binary_tensor_data"],
                },
                separators=(",", ":"),
            ).encode()
        )
        live = client.get("/v2/health/live")
        assert (live.status_code, live.content) == (200, b'{"live":true}')


def test_readiness_needs_the_audit_log_and_every_lane(gw: Served) -> None:
    with _client(gw, None) as client:
        assert (client.get("/v2/health/ready").status_code, client.get("/v2/health/ready").json()) == (
            200,
            {"ready": True},
        )
        # with the group-commit writer its last commit decides (audit_ok is the inline path's)
        assert gw.state.audit is not None
        gw.state.audit._failed = True
        got = client.get("/v2/health/ready")
        assert (got.status_code, got.json()) == (503, {"ready": False})
        gw.state.audit._failed = False
        writer, gw.state.audit = gw.state.audit, None
        try:
            gw.state.audit_ok = False
            got = client.get("/v2/health/ready")
            assert (got.status_code, got.json()) == (503, {"ready": False})
        finally:
            gw.state.audit_ok = True
            gw.state.audit = writer
        gw.state.lanes = {}
        got = client.get("/v2/health/ready")
        assert (got.status_code, got.json()) == (503, {"ready": False})
        gw.reset()
        closed = Lane("acme", "free", DIGEST, lambda: None, 1)  # type: ignore[arg-type,return-value]
        closed._closed = True
        gw.state.lanes[("acme", "closed")] = closed
        got = client.get("/v2/health/ready")
        assert (got.status_code, got.json()) == (503, {"ready": False})


@pytest.mark.parametrize(
    "method, path, status, text",
    [
        ("GET", "/v3", 404, "not found"),
        ("GET", "/v2/models/affine/infer", 405, "method not allowed"),
        ("POST", "/v2", 405, "method not allowed"),
        ("POST", "/v2/health/ready", 405, "method not allowed"),
        ("DELETE", "/v2/models/affine", 405, "method not allowed"),
        ("POST", "/v2/models/affine/ready", 405, "method not allowed"),
        ("POST", "/v2/models", 405, "method not allowed"),
        ("POST", "/v2/health/live", 405, "method not allowed"),
    ],
)
def test_unknown_routes_and_methods(gw: Served, method: str, path: str, status: int, text: str) -> None:
    with _client(gw) as client:
        got = client.request(method, path)
    assert (got.status_code, got.json()) == (status, {"error": text})


# model listing, metadata, readiness --------------------------------------------------------------


@pytest.mark.parametrize(
    "who, models",
    [
        ("acme", ["affine", "free"]),  # "unadmitted" is configured for acme but not admitted
        ("globex", ["affine", "private"]),
        ("acme-free-only", ["free"]),  # a scoped key sees its scope only
        ("acme-affine-only", ["affine"]),
        ("nobody", []),
    ],
)
def test_list_models(gw: Served, who: str, models: list[str]) -> None:
    with _client(gw, who) as client:
        got = client.get("/v2/models")
    assert (got.status_code, got.json()) == (200, {"models": [{"name": n} for n in models]})


def test_model_metadata(gw: Served) -> None:
    admission = {
        "digest": DIGEST, "integrity": "none configured", "verdict": "CLEAN", "decision": "admitted",
        "reason": "", "findings": [], "time": 1.0,
    }  # fmt: skip
    with _client(gw) as client:
        got = client.get("/v2/models/affine")
        assert got.status_code == 200
        assert got.json() == {
            "name": "affine", "versions": ["1"], "platform": "onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}], "outputs": [],
            "airlock": {"admission": admission},
        }  # fmt: skip
        free = client.get("/v2/models/free").json()
        assert (free["platform"], free["inputs"]) == ("auto", [])


@pytest.mark.parametrize("route", ["/v2/models/{}", "/v2/models/{}/ready"])
@pytest.mark.parametrize(
    "who, model, status, text",
    [
        (None, "affine", 401, "unauthenticated"),
        ("acme", "private", 404, "not found"),  # served to globex only: same as no such model
        ("acme", "nonexistent", 404, "not found"),
        ("acme", "unadmitted", 404, "not found"),
        ("acme-free-only", "affine", 403, "forbidden"),
        ("acme-affine-only", "free", 403, "forbidden"),
    ],
)
def test_model_routes_refuse(
    gw: Served, route: str, who: str | None, model: str, status: int, text: str
) -> None:
    with _client(gw, who) as client:
        got = client.get(route.format(model))
    assert (got.status_code, got.json()) == (status, {"error": text})
    assert ("www-authenticate" in got.headers) is (status == 401)


def test_model_ready(gw: Served) -> None:
    with _client(gw) as client:
        got = client.get("/v2/models/affine/ready")
        assert (got.status_code, got.json()) == (200, {"name": "affine", "ready": True})
        lane = gw.state.lanes[("acme", "affine")]
        lane._closed = True
        try:
            got = client.get("/v2/models/affine/ready")
        finally:
            lane._closed = False
        assert (got.status_code, got.json()) == (503, {"name": "affine", "ready": False})
        del gw.state.lanes[("acme", "affine")]
        got = client.get("/v2/models/affine/ready")
        assert (got.status_code, got.json()) == (503, {"name": "affine", "ready": False})


# authentication and visibility of inference -------------------------------------------------------


@pytest.mark.parametrize(
    "model, label",
    [("affine", "affine"), ("nonexistent", ""), ("x" * 300, "")],  # never a caller's name verbatim
)
def test_unauthenticated_inference(gw: Served, model: str, label: str) -> None:
    for headers in ({}, {"Authorization": "Bearer alk_0123456789abcdef_wrong"}):
        got = _infer(gw, _body([1, 2, 3, 4]), who=None, model=model, headers=headers)
        assert (got.status_code, got.json()) == (401, {"error": "unauthenticated"})
        assert got.headers["www-authenticate"] == "Bearer"
        assert _rows(gw, got) == [("", "", label, "", "denied:unauthenticated", 401)]
    assert gw.metric("airlock_unauthenticated_total") == 2
    assert gw.metric("airlock_requests_total", tenant="", model=label, status="401") == 2


def test_each_401_is_charged_to_the_source_address(gw: Served) -> None:
    preauth = gw.state.preauth
    assert preauth is not None
    preauth.failure_burst, preauth.failure_rate = 2.0, 0.001
    for _ in range(2):
        assert _infer(gw, _body([1, 2, 3, 4]), who=None).status_code == 401
    got = _infer(gw, _body([1, 2, 3, 4]), who=None)
    assert (got.status_code, got.json()) == (429, {"error": "rate limit exceeded: source address"})
    # a good key from the same address is refused too, before authentication
    assert _infer(gw, _body([1, 2, 3, 4])).status_code == 429


@pytest.mark.parametrize(
    "who, model, status, text, decision, label, digest",
    [
        ("acme", "private", 404, "not found", "denied:not-found", "private", ""),
        ("acme", "nonexistent", 404, "not found", "denied:not-found", "", ""),
        ("acme", "unadmitted", 404, "not found", "denied:not-found", "unadmitted", ""),
        ("acme-free-only", "affine", 403, "forbidden", "denied:scope", "affine", DIGEST),
    ],
)
def test_inference_visibility(
    gw: Served, who: str, model: str, status: int, text: str, decision: str, label: str, digest: str
) -> None:
    got = _infer(gw, _body([1, 2, 3, 4]), who=who, model=model)
    assert (got.status_code, got.json()) == (status, {"error": text})
    assert _rows(gw, got) == [("acme", gw.key_ids[who], label, digest, decision, status)]
    # a model a tenant cannot see is never a metric label, even when it exists
    metric_label = "" if status == 404 else label
    assert gw.metric("airlock_requests_total", tenant="acme", model=metric_label, status=str(status)) == 1


# a served request ---------------------------------------------------------------------------------


def test_inference_round_trip_is_audited_before_and_after(gw: Served) -> None:
    before = gw.calls()
    got = _infer(gw, _body([1, 2, 3, 4], [0, 0, 0, 1]))
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    request_id = got.headers["x-request-id"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    assert got.json() == {
        "model_name": "affine",
        "id": request_id,
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [2, 4], "data": [3, 5, 7, 9, 1, 1, 1, 3]},
            {"name": "s", "datatype": "FP32", "shape": [2], "data": [10, 1]},
        ],
    }
    assert gw.calls() == before + 1
    key = gw.key_ids["acme"]
    assert _rows(gw, got) == [
        ("acme", key, "affine", DIGEST, "started", 0),
        ("acme", key, "affine", DIGEST, "allowed", 200),
    ]
    assert gw.metric("airlock_requests_total", tenant="acme", model="affine", status="200") == 1
    assert gw.metric("airlock_request_seconds_count", tenant="acme", model="affine") == 1
    assert gw.metric("airlock_in_flight", tenant="acme") == 0


def test_the_callers_id_is_echoed_in_the_reply_not_the_audit(gw: Served) -> None:
    got = _infer(gw, _body([1, 2, 3, 4], id="mine"))
    assert got.status_code == 200 and got.json()["id"] == "mine"
    assert got.headers["x-request-id"] != "mine" and len(gw.rows(got.headers["x-request-id"])) == 2


@pytest.mark.parametrize(
    "outputs, names",
    [([{"name": "s"}], ["s"]), ([{"name": "s"}, {"name": "y"}], ["s", "y"]), ([{"name": "y"}], ["y"])],
)
def test_requested_outputs_are_selected_in_order(gw: Served, outputs: list[Any], names: list[str]) -> None:
    got = _infer(gw, _body([1, 2, 3, 4], outputs=outputs))
    assert got.status_code == 200
    assert [o["name"] for o in got.json()["outputs"]] == names


def test_a_requested_output_the_model_does_not_produce(gw: Served) -> None:
    got = _infer(gw, _body([3, 2, 3, 4], outputs=[{"name": "y"}, {"name": "s"}, {"name": "t"}]))
    assert (got.status_code, got.json()) == (
        400,
        {"error": "invalid request: output 's' is not produced by the model"},
    )
    assert [r[4:] for r in _rows(gw, got)] == [("started", 0), ("denied:malformed", 400)]


def _split(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def test_binary_outputs_for_the_whole_request(gw: Served) -> None:
    got = _infer(gw, _body([1, 2, 3, 4], parameters={"binary_data_output": True}))
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/octet-stream"
    header, raw = _split(got)
    assert header["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}},
        {"name": "s", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
    ]
    assert raw == np.array([3, 5, 7, 9, 10], dtype="<f4").tobytes()


def test_binary_output_for_one_output(gw: Served) -> None:
    outputs = [{"name": "y"}, {"name": "s", "parameters": {"binary_data": True}}]
    got = _infer(gw, _body([1, 2, 3, 4], outputs=outputs))
    header, raw = _split(got)
    assert header["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [3, 5, 7, 9]}
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 4}
    assert raw == np.array([10], dtype="<f4").tobytes()
    plain = _infer(gw, _body([1, 2, 3, 4], outputs=[{"name": "y", "parameters": {"binary_data": False}}]))
    assert "inference-header-content-length" not in plain.headers
    assert plain.headers["content-type"] == "application/json"


@pytest.mark.parametrize("count", [262144 - 40, 262144 + 1, 3 * 65536 * 2 + 7])
def test_large_replies_arrive_whole(gw: Served, count: int) -> None:
    """Replies above 1 MiB are streamed in 256 KiB slices: every byte arrives, in order."""
    got = _infer(gw, _body([7, count, 0, 0], parameters={"binary_data_output": True}))
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/octet-stream"
    assert int(got.headers["content-length"]) == len(got.content)
    header, raw = _split(got)
    assert header["outputs"][0]["shape"] == [count]
    assert np.array_equal(np.frombuffer(raw, dtype="<f4"), np.arange(count, dtype=np.float32))


def test_a_large_json_reply_is_streamed_as_json(gw: Served) -> None:
    got = _infer(gw, _body([7, 200000, 0, 0]))  # ~1.3 MB of JSON numbers
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    assert int(got.headers["content-length"]) == len(got.content) > 1024 * 1024
    assert got.json()["outputs"][0]["data"][-1] == 199999


def test_an_output_that_cannot_be_encoded_is_a_502(gw: Served) -> None:
    got = _infer(gw, _body([5, 0, 0, 0]))
    assert (got.status_code, got.json()) == (
        502,
        {"error": "bad gateway: the model's output cannot be represented"},
    )
    assert [r[4:] for r in _rows(gw, got)] == [("started", 0), ("failed:output", 502)]


# worker outcomes ----------------------------------------------------------------------------------


def test_a_model_that_raises_is_a_400_with_a_fixed_text(gw: Served) -> None:
    got = _infer(gw, _body([13, 0, 0, 0]))
    assert (got.status_code, got.json()) == (
        400,
        {"error": "invalid request: the model could not run on these inputs"},
    )
    assert b"passwd" not in got.content and b"Traceback" not in got.content
    assert [r[4:] for r in _rows(gw, got)] == [("started", 0), ("failed:model", 400)]
    assert gw.metric("airlock_worker_failures_total", tenant="acme", model="affine", reason="crash") == 0
    assert _infer(gw, _body([1, 2, 3, 4])).status_code == 200  # the worker serves on


def test_a_crashed_worker_is_a_503_and_is_replaced(gw: Served) -> None:
    got = _infer(gw, _body([66, 0, 0, 0]))
    assert (got.status_code, got.json()) == (
        503,
        {"error": "model worker unavailable; it is being restarted"},
    )
    assert [r[4:] for r in _rows(gw, got)] == [("started", 0), ("failed:worker", 503)]
    assert gw.metric("airlock_worker_failures_total", tenant="acme", model="affine", reason="crash") == 1
    assert gw.metric("airlock_worker_failures_total", tenant="acme", model="affine", reason="timeout") == 0
    assert _infer(gw, _body([1, 2, 3, 4])).status_code == 200


def test_a_worker_past_the_deadline_is_a_504(gw: Served) -> None:
    gw.serve(request_timeout_seconds=0.2)
    got = _infer(gw, _body([99, 0, 0, 0]))
    assert (got.status_code, got.json()) == (504, {"error": "request timed out"})
    assert [r[4:] for r in _rows(gw, got)] == [("started", 0), ("failed:timeout", 504)]
    assert gw.metric("airlock_worker_failures_total", tenant="acme", model="affine", reason="timeout") == 1
    assert gw.metric("airlock_worker_failures_total", tenant="acme", model="affine", reason="crash") == 0
    assert gw.metric("airlock_request_seconds_count", tenant="acme", model="affine") == 0


def test_the_deadline_comes_from_the_configuration(gw: Served) -> None:
    gw.serve(request_timeout_seconds=HANG_SECONDS + 2)
    assert _infer(gw, _body([99, 1, 1, 1])).status_code == 200  # slow, but within its deadline


def test_an_unexpected_error_is_a_500_with_a_fixed_text_and_audited(gw: Served) -> None:
    gw.state.lanes[("acme", "free")] = object()  # type: ignore[assignment]  # a lane without infer: AttributeError inside
    got = _infer(gw, {"inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": [1]}]}, model="free")
    assert (got.status_code, got.json()) == (500, {"error": "internal error"})
    assert [r[4:] for r in _rows(gw, got)] == [("started", 0), ("failed:internal", 500)]


# budgets ------------------------------------------------------------------------------------------


def test_request_budget_at_n_minus_1_n_n_plus_1(gw: Served) -> None:
    for _ in range(3):  # the "limited" tenant: 3 requests per minute
        assert _infer(gw, _body([1, 2, 3, 4]), who="limited").status_code == 200
    got = _infer(gw, _body([1, 2, 3, 4]), who="limited")
    assert (got.status_code, got.json()) == (429, {"error": "rate limit exceeded: requests"})
    assert got.headers["retry-after"] == "20"  # one token at 3 per minute
    assert _rows(gw, got) == [("limited", gw.key_ids["limited"], "affine", DIGEST, "limited:requests", 429)]
    assert gw.metric("airlock_rate_limited_total", tenant="limited", budget="requests") == 1


def test_refusals_before_the_budget_take_no_token(gw: Served) -> None:
    for _ in range(3):
        assert _infer(gw, _body([1, 2, 3, 4]), who="limited", model="private").status_code == 404
    for _ in range(3):
        assert _infer(gw, _body([1, 2, 3, 4]), who="limited").status_code == 200


def test_tensor_byte_budget(gw: Served) -> None:
    gw.state.config = replace(gw.config, defaults=TenantLimits(6000, 32, 8))
    assert _infer(gw, _body([1, 2, 3, 4])).status_code == 200  # 16 bytes of 32
    # 32 bytes fit the budget but not what is left of it: a 429 to retry, not a 413
    got = _infer(gw, _body([1, 2, 3, 4], [1, 2, 3, 4]))
    assert (got.status_code, got.json()) == (429, {"error": "rate limit exceeded: tensor bytes"})
    assert got.headers["retry-after"] == "30"  # 16 bytes at 32 per minute
    assert _rows(gw, got) == [("acme", gw.key_ids["acme"], "affine", DIGEST, "limited:tensor_bytes", 429)]
    assert gw.metric("airlock_rate_limited_total", tenant="acme", budget="tensor_bytes") == 1
    assert _infer(gw, _body([1, 2, 3, 4])).status_code == 200  # the refusal took nothing
    assert _infer(gw, _body([1, 2, 3, 4])).status_code == 429


@pytest.mark.parametrize("budget, status", [(31, 413), (32, 200), (33, 200)])
def test_a_request_larger_than_the_whole_byte_budget(gw: Served, budget: int, status: int) -> None:
    gw.state.config = replace(gw.config, defaults=TenantLimits(6000, budget, 8))
    got = _infer(gw, _body([1, 2, 3, 4], [1, 2, 3, 4]))  # 32 bytes
    assert got.status_code == status
    if status == 413:
        assert got.json() == {
            "error": "request body too large: tensors exceed the tenant's per-minute byte budget"
        }
        assert [r[4:] for r in _rows(gw, got)] == [("denied:tensor-size", 413)]
        assert "retry-after" not in got.headers


def test_concurrency_cap(gw: Served) -> None:
    gw.serve(request_timeout_seconds=HANG_SECONDS + 2)
    hung: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: hung.append(_infer(gw, _body([99, 0, 0, 0]), who="limited")))
    thread.start()
    deadline = time.monotonic() + 10
    while gw.metric("airlock_in_flight", tenant="limited") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.metric("airlock_in_flight", tenant="limited") == 1
    got = _infer(gw, _body([1, 2, 3, 4]), who="limited")  # the cap is 1
    assert (got.status_code, got.json()) == (429, {"error": "rate limit exceeded: concurrency"})
    assert got.headers["retry-after"] == "1"
    assert _rows(gw, got) == [
        ("limited", gw.key_ids["limited"], "affine", DIGEST, "limited:concurrency", 429)
    ]
    assert gw.metric("airlock_rate_limited_total", tenant="limited", budget="concurrency") == 1
    assert gw.metric("airlock_in_flight", tenant="limited") == 1  # the refused one was not counted
    assert _infer(gw, _body([1, 2, 3, 4]), who="acme").status_code == 200  # another tenant is not held
    thread.join(20)
    assert hung[0].status_code == 200
    assert gw.metric("airlock_in_flight", tenant="limited") == 0
    # the slot came back; the refusal by concurrency took no request token (3 per minute: 1 used)
    assert _infer(gw, _body([1, 2, 3, 4]), who="limited").status_code == 200
    assert _infer(gw, _body([1, 2, 3, 4]), who="limited").status_code == 200
    assert _infer(gw, _body([1, 2, 3, 4]), who="limited").status_code == 429


# the body -----------------------------------------------------------------------------------------


def _raw(gw: Served, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request in one write on a fresh connection (a refusal that closes the connection then
    finds nothing unread, so no reset can overtake the reply): status, headers, body."""
    request = (
        f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.tokens['acme']}\r\n"
        f"{head}\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply and (chunk := sock.recv(65536)):
            reply += chunk
        top, _, rest = reply.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(rest) < int(headers.get("content-length", 0)) and (chunk := sock.recv(65536)):
            rest += chunk
    return int(lines[0].split()[1]), headers, rest


def _padded(size: int) -> bytes:
    body = json.dumps(_body([1, 2, 3, 4])).encode()
    return body + b" " * (size - len(body))


def _chunked(body: bytes, end: bool) -> bytes:
    parts = [body[:1000], body[1000:]]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + (b"0\r\n\r\n" if end else b"")


TOO_LARGE = b'{"error":"request body too large: the limit is 4096 bytes"}'


@pytest.mark.parametrize("size, status", [(4095, 200), (4096, 200), (4097, 413)])
def test_body_cap_at_n_minus_1_n_n_plus_1(gw: Served, size: int, status: int) -> None:
    body = _padded(size)
    # declared: refused on the Content-Length alone, before a byte of the body is read
    got = _raw(gw, f"Content-Length: {size}\r\n", body if status == 200 else b"")
    assert got[0] == status
    if status == 413:
        assert got[2] == TOO_LARGE and got[1]["connection"] == "close"
        assert [r[4:] for r in _rows_of(gw, got[1])] == [("denied:body-size", 413)]
    # chunked: counted as it arrives (the last chunk is left unsent when the cap is passed)
    got = _raw(gw, "Transfer-Encoding: chunked\r\n", _chunked(body, end=status == 200))
    assert got[0] == status
    if status == 413:
        assert got[2] == TOO_LARGE
        assert [r[4:] for r in _rows_of(gw, got[1])] == [("denied:body-size", 413)]


def _rows_of(gw: Served, headers: dict[str, str]) -> list[tuple[str, str, str, str, str, int]]:
    rows = gw.rows(headers["x-request-id"])
    return [(r.tenant, r.key_id, r.model, r.model_digest, r.decision, r.status) for r in rows]


@pytest.mark.parametrize("status", [200, 413])
def test_body_cap_follows_the_configuration(gw: Served, status: int) -> None:
    body = json.dumps(_body([1, 2, 3, 4])).encode()
    gw.serve(max_body_bytes=len(body) - (status == 413))
    got = _raw(gw, f"Content-Length: {len(body)}\r\n", body if status == 200 else b"")
    assert got[0] == status
    if status == 413:
        assert got[2] == f'{{"error":"request body too large: the limit is {len(body) - 1} bytes"}}'.encode()


def test_a_caller_that_hangs_up_mid_body_is_audited(gw: Served) -> None:
    seen = {r.seq for r in gw.state.store.audit_rows()}
    head = (
        f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.tokens['acme']}\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(head + b'{"inputs": [')
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        new = [r for r in gw.state.store.audit_rows() if r.seq not in seen]
        if new:
            break
        time.sleep(0.02)
    assert [(r.tenant, r.decision, r.status) for r in new] == [("acme", "failed:disconnected", 499)]


# malformed requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "request body is not valid JSON"),
        (b"[]", "request body must be a JSON object"),
        (json.dumps({"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}).encode(),
         "inputs are ['z'], the model takes ['x']"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 1e400]}]}',
         "input 'x': a number is out of range for FP32"),
    ],
)  # fmt: skip
def test_malformed_requests_are_a_400_with_a_fixed_phrase(gw: Served, body: bytes, message: str) -> None:
    got = _infer(gw, body)
    assert (got.status_code, got.json()) == (400, {"error": f"invalid request: {message}"})
    assert [r[4:] for r in _rows(gw, got)] == [("denied:malformed", 400)]


def _binary_request(header_length: str | None = None) -> tuple[bytes, dict[str, str]]:
    x = np.array([[1, 2, 3, 4]], dtype="<f4")
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}
            ]
        }
    ).encode()
    return header + x.tobytes(), {"Inference-Header-Content-Length": header_length or str(len(header))}


@pytest.mark.parametrize(
    "value, ok",
    [
        (None, True),
        ("{:012d}", True),  # 12 digits: the most accepted
        ("{:013d}", False),
        ("{}.0", False),
        ("-{}", False),
        ("+{}", False),
        ("0x{:x}", False),
    ],
)
def test_inference_header_content_length_is_strictly_decimal(gw: Served, value: str | None, ok: bool) -> None:
    body, headers = _binary_request()
    if value is not None:
        headers["Inference-Header-Content-Length"] = value.format(
            int(headers["Inference-Header-Content-Length"])
        )
    got = _infer(gw, body, headers=headers)
    if ok:
        assert got.status_code == 200
        assert got.json()["outputs"][1]["data"] == [10]
    else:
        assert (got.status_code, got.json()) == (
            400,
            {"error": "invalid request: Inference-Header-Content-Length must be a decimal number"},
        )
        assert [r[4:] for r in _rows(gw, got)] == [("denied:malformed", 400)]


def test_inference_header_content_length_in_non_ascii_digits(gw: Served) -> None:
    """``"²".isdigit()`` is True: a Latin-1 superscript two must not pass as a length."""
    body, _ = _binary_request()
    head = (
        f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.tokens['acme']}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode() + b"Inference-Header-Content-Length: \xb2\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(head + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert reply.endswith(
        b'{"error":"invalid request: Inference-Header-Content-Length must be a decimal number"}'
    )


# the audit log ------------------------------------------------------------------------------------


def _on_audit_connections(gw: Served, statement: str) -> None:
    """Run ``statement`` on the store's connections: the one it reads with and the one audit rows
    are appended on (under its lock), so a TEMP trigger is seen by the appends."""
    store: Any = gw.state.store
    store._db.execute(statement)
    with store._audit_lock:
        store._audit_connection().execute(statement)


def _fail_audit(gw: Served, when: str = "1") -> None:
    """Make the audit table refuse inserts (as a full disk would: the store's insert fails)."""
    _on_audit_connections(
        gw,
        f"CREATE TEMP TRIGGER refuse BEFORE INSERT ON audit WHEN {when} "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    )


def _heal_audit(gw: Served) -> None:
    _on_audit_connections(gw, "DROP TRIGGER IF EXISTS temp.refuse")


@pytest.fixture
def audit_fails(gw: Served) -> Iterator[Served]:
    try:
        yield gw
    finally:
        _heal_audit(gw)


@pytest.mark.parametrize("writer", ["group commit", "inline"])
def test_no_audit_row_no_service(audit_fails: Served, caplog: pytest.LogCaptureFixture, writer: str) -> None:
    gw = audit_fails
    if writer == "inline":
        gw.state.audit = None  # rows written by the request itself
    _fail_audit(gw)
    before = gw.calls()
    with caplog.at_level(logging.ERROR, logger="airlock.gateway"):
        for _ in range(2):
            got = _infer(gw, _body([1, 2, 3, 4]))
            assert (got.status_code, got.json()) == (503, AUDIT_UNAVAILABLE)
            assert gw.rows(got.headers["x-request-id"]) == []
    assert gw.calls() == before  # the model never ran
    assert gw.state.audit_ok is False
    assert gw.metric("airlock_audit_failures_total") == 2  # one per request: the outcome is not retried
    assert gw.metric("airlock_requests_total", tenant="acme", model="affine", status="503") == 2
    # logged once when the log became unavailable, not once per request
    assert [r.getMessage() for r in caplog.records if "audit" in r.getMessage()] == [
        "audit log unavailable: refusing inference until a row can be written"
    ]
    with _client(gw, None) as client:
        assert client.get("/v2/health/ready").status_code == 503
    _heal_audit(gw)
    got = _infer(gw, _body([1, 2, 3, 4]))
    assert got.status_code == 200 and bool(gw.state.audit_ok)
    assert [r[4:] for r in _rows(gw, got)] == [("started", 0), ("allowed", 200)]
    with _client(gw, None) as client:
        assert client.get("/v2/health/ready").status_code == 200


def test_an_outcome_that_cannot_be_audited_is_not_delivered(audit_fails: Served) -> None:
    gw = audit_fails
    _fail_audit(gw, "NEW.decision != 'started'")
    before = gw.calls()
    got = _infer(gw, _body([1, 2, 3, 4]))
    assert (got.status_code, got.json()) == (503, AUDIT_UNAVAILABLE)
    assert gw.calls() == before + 1
    assert [r[4:] for r in _rows(gw, got)] == [("started", 0)]
    assert gw.state.audit_ok is False and gw.metric("airlock_audit_failures_total") == 1
    # a refusal that cannot be audited is not delivered either
    got = _infer(gw, _body([1, 2, 3, 4]), who=None)
    assert (got.status_code, got.json()) == (503, AUDIT_UNAVAILABLE)
    assert gw.metric("airlock_audit_failures_total") == 2


# unexpected failures outside inference ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/models", "/v2/models/affine", "/v2/models/affine/ready"])
def test_an_unexpected_failure_in_any_route_is_a_500_with_a_fixed_text(
    gw: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    broken = SqliteStore(tmp_path / "state.db", audit_key=b"k" * 32)
    broken.close()  # every query now raises sqlite3.ProgrammingError
    gw.state.store = broken
    with caplog.at_level(logging.ERROR, logger="airlock.gateway"), _client(gw) as client:
        got = client.get(path)
    assert (got.status_code, got.json()) == (500, {"error": "internal error"})
    assert b"ProgrammingError" not in got.content and b"closed" not in got.content
    logged = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert [(r.path, r.error) for r in logged] == [(path, "ProgrammingError")]  # type: ignore[attr-defined]


# defence in depth behind the HTTP parser ----------------------------------------------------------


@pytest.mark.parametrize(
    "declared, status",
    [(b"abc", 413), (b"\xb2", 413), (b"1e3", 413), (b"-1", 413), (b"4097", 413), (None, 200), (b"LEN", 413)],
)
def test_content_length_is_checked_by_the_app_too(gw: Served, declared: bytes | None, status: int) -> None:
    """h11 lets only decimal Content-Length values through; the app does not rely on it (``"²"``
    passes ``str.isdigit()``; ``int()`` of it raises)."""
    body = json.dumps(_body([1, 2, 3, 4])).encode()
    if declared == b"LEN":  # the true length, in digits: accepted
        declared, status = str(len(body)).encode(), 200
    headers = [(b"authorization", f"Bearer {gw.tokens['acme']}".encode())]
    if declared is not None:
        headers.append((b"content-length", declared))
    got = gw.asgi(headers, body)
    assert got[0] == status
    if status == 413:
        assert got[1] == b'{"error":"request body too large: the limit is 4096 bytes"}'


def test_body_cap_counts_every_chunk(gw: Served) -> None:
    """The body arrives in two reads (3000 + 1097 bytes): the cap applies to their sum."""
    body = _padded(4097)
    head = (
        f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.tokens['acme']}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (3000, body[:3000]))
        time.sleep(0.2)
        sock.sendall(b"%x\r\n%s\r\n" % (1097, body[3000:]))
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413 ") and reply.endswith(TOO_LARGE)


# large bodies and replies are parsed and encoded in the tenant's codec process --------------------


def _binary_json_reply(gw: Served, who: str = "acme") -> httpx.Response:
    """Binary input (always parsed inline), JSON outputs: 20 bytes of FP32 = 80 'text bytes'."""
    body, headers = _binary_request()
    return _infer(gw, body, who=who, headers=headers)


Y = {"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [3, 5, 7, 9]}
S = {"name": "s", "datatype": "FP32", "shape": [1], "data": [10]}


@pytest.mark.parametrize("offload, codec", [(81, False), (80, False), (79, True)])
def test_replies_are_encoded_off_the_loop_above_the_offload_size(
    gw: Served, offload: int, codec: bool
) -> None:
    gw.serve(offload_bytes=offload)
    before = gw.codec_jobs("acme")
    got = _binary_json_reply(gw)
    assert got.status_code == 200
    assert got.json() == {"model_name": "affine", "id": got.headers["x-request-id"], "outputs": [Y, S]}
    assert gw.codec_jobs("acme") - before == codec


def test_binary_replies_are_encoded_by_the_codec_too(gw: Served) -> None:
    gw.serve(offload_bytes=79)
    before = gw.codec_jobs("acme")
    body, headers = _binary_request()
    body = body.replace(
        b'"binary_data_size": 16}}]', b'"binary_data_size": 16}}], "parameters": {"binary_data_output": true}'
    )
    headers["Inference-Header-Content-Length"] = str(len(body) - 16)
    got = _infer(gw, body, headers=headers)
    assert got.status_code == 200
    header, raw = _split(got)
    assert raw == np.array([3, 5, 7, 9, 10], dtype="<f4").tobytes()
    assert header["id"] == got.headers["x-request-id"] and header["model_name"] == "affine"
    # binary outputs carry no JSON numbers: nothing worth offloading
    assert gw.codec_jobs("acme") == before


@pytest.mark.parametrize("delta, codec", [(1, False), (0, False), (-1, True)])
def test_requests_are_parsed_off_the_loop_above_the_offload_size(gw: Served, delta: int, codec: bool) -> None:
    body = json.dumps(_body([1, 2, 3, 4], id="r1")).encode()
    gw.serve(offload_bytes=len(body) + delta)
    before = gw.codec_jobs("acme")
    got = _infer(gw, body)
    assert got.status_code == 200
    assert got.json() == {"model_name": "affine", "id": "r1", "outputs": [Y, S]}
    assert gw.codec_jobs("acme") - before == codec
    if codec:  # a malformed request is refused by the codec with the same fixed phrase
        got = _infer(
            gw,
            json.dumps(
                {"inputs": [{"name": "z", "datatype": "FP32", "shape": [11], "data": [1] * 11}]}
            ).encode(),
        )
        assert (got.status_code, got.json()) == (
            400,
            {"error": "invalid request: inputs are ['z'], the model takes ['x']"},
        )
        assert gw.codec_jobs("acme") - before == 2
        assert gw.codec_jobs("globex") == 0  # per tenant


def test_binary_requests_are_parsed_inline_whatever_their_size(gw: Served) -> None:
    gw.serve(offload_bytes=100)  # the binary body is ~130 bytes; its JSON reply 80 "text bytes"
    before = gw.codec_jobs("acme")
    got = _binary_json_reply(gw)
    assert got.status_code == 200 and gw.codec_jobs("acme") == before


def _stopped_codec(gw: Served, offload: int) -> int:
    """Start acme's codec process and stop it (SIGSTOP): work handed to it now waits."""
    gw.serve(offload_bytes=offload, request_timeout_seconds=20)
    assert _infer(gw, _body([1, 2, 3, 4])).status_code == 200
    (pid,) = gw.state.codecs.pids("acme")
    os.kill(pid, signal.SIGSTOP)
    return pid


def _in_thread(fn: Any) -> tuple[threading.Thread, list[httpx.Response]]:
    out: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


CODEC_UNAVAILABLE = {"error": "request decoder unavailable; retry"}


@pytest.mark.parametrize("stage", ["parse", "encode"])
def test_a_codec_that_dies_is_a_503(gw: Served, stage: str) -> None:
    gw.serve(request_timeout_seconds=20)
    pid = _stopped_codec(gw, offload=10)
    request = (
        (lambda: _infer(gw, _body([1, 2, 3, 4]))) if stage == "parse" else (lambda: _binary_json_reply(gw))
    )
    thread, out = _in_thread(request)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    thread.join(20)
    assert (out[0].status_code, out[0].json()) == (503, CODEC_UNAVAILABLE)
    started = [("started", 0)] if stage == "encode" else []
    assert [r[4:] for r in _rows(gw, out[0])] == [*started, ("failed:codec", 503)]
    if stage == "parse":
        assert _infer(gw, _body([1, 2, 3, 4])).status_code == 200  # a fresh codec process


@pytest.mark.parametrize("stage", ["parse", "encode"])
def test_a_codec_past_the_deadline_is_a_504(gw: Served, stage: str) -> None:
    pid = _stopped_codec(gw, offload=10)
    gw.serve(offload_bytes=10, request_timeout_seconds=0.4)
    try:
        got = _infer(gw, _body([1, 2, 3, 4])) if stage == "parse" else _binary_json_reply(gw)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert (got.status_code, got.json()) == (504, {"error": "request timed out"})
    started = [("started", 0)] if stage == "encode" else []
    assert [r[4:] for r in _rows(gw, got)] == [*started, ("failed:timeout", 504)]


# logs and metrics of inference --------------------------------------------------------------------


def _logged(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    fields = ("request_id", "tenant", "model", "status", "decision", "ms", "error")
    return [
        {f: getattr(r, f) for f in fields if hasattr(r, f)}
        for r in caplog.records
        if r.getMessage() == message
    ]


@pytest.mark.parametrize(
    "who, model, status, decision, label",
    [
        ("acme", "affine", 200, "allowed", "affine"),
        ("acme", "private", 404, "denied:not-found", ""),  # not visible to acme: never named
        (None, "affine", 401, "denied:unauthenticated", "affine"),
    ],
)
def test_each_inference_is_logged_once_with_fixed_fields(
    gw: Served,
    caplog: pytest.LogCaptureFixture,
    who: str | None,
    model: str,
    status: int,
    decision: str,
    label: str,
) -> None:
    with caplog.at_level(logging.INFO, logger="airlock.gateway"):
        got = _infer(gw, _body([1, 2, 3, 4]), who=who, model=model)
    assert got.status_code == status
    (record,) = _logged(caplog, "infer")
    ms = record.pop("ms")
    assert record == {
        "request_id": got.headers["x-request-id"], "tenant": "acme" if who else "", "model": label,
        "status": status, "decision": decision,
    }  # fmt: skip
    assert isinstance(ms, float) and 0 < ms < 20000 and ms == round(ms, 3)  # milliseconds, not seconds


def test_latency_is_measured_for_served_requests(gw: Served) -> None:
    assert _infer(gw, _body([1, 2, 3, 4])).status_code == 200
    total = gw.metric("airlock_request_seconds_sum", tenant="acme", model="affine")
    assert 0 < total < 20
    assert gw.metric("airlock_request_seconds_count", tenant="acme", model="affine") == 1


def test_a_crashed_worker_is_logged_with_a_bounded_error(
    gw: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="airlock.gateway"):
        got = _infer(gw, _body([66, 0, 0, 0]))
    assert got.status_code == 503
    (record,) = _logged(caplog, "worker failed")
    error = ("the worker broke its protocol: " + "x" * 600)[:500]
    assert record == {
        "request_id": got.headers["x-request-id"],
        "tenant": "acme",
        "model": "affine",
        "error": error,
    }


def test_an_unexpected_error_is_logged_by_type_only(gw: Served, caplog: pytest.LogCaptureFixture) -> None:
    gw.state.lanes[("acme", "free")] = object()  # type: ignore[assignment]  # a lane without infer
    with caplog.at_level(logging.ERROR, logger="airlock.gateway"):
        got = _infer(
            gw, {"inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": [1]}]}, model="free"
        )
    assert got.status_code == 500
    assert _logged(caplog, "request failed") == [
        {"request_id": got.headers["x-request-id"], "error": "AttributeError"}
    ]


def test_an_unaudited_outcome_is_logged_as_such(
    audit_fails: Served, caplog: pytest.LogCaptureFixture
) -> None:
    _fail_audit(audit_fails, "NEW.decision != 'started'")
    with caplog.at_level(logging.INFO, logger="airlock.gateway"):
        got = _infer(audit_fails, _body([1, 2, 3, 4]))
    assert got.status_code == 503
    assert [(r["status"], r["decision"]) for r in _logged(caplog, "infer")] == [(503, "failed:audit")]


# budgets are per tenant ---------------------------------------------------------------------------


def test_each_tenant_has_its_own_request_bucket(gw: Served) -> None:
    for _ in range(3):
        assert _infer(gw, _body([1, 2, 3, 4]), who="limited").status_code == 200
    assert _infer(gw, _body([1, 2, 3, 4]), who="limited").status_code == 429
    assert _infer(gw, _body([1, 2, 3, 4]), who="globex").status_code == 200


def test_each_tenant_has_its_own_byte_bucket(gw: Served) -> None:
    gw.state.config = replace(gw.config, defaults=TenantLimits(6000, 32, 8))
    assert _infer(gw, _body([1, 2, 3, 4], [1, 2, 3, 4])).status_code == 200  # acme: all 32 bytes
    assert _infer(gw, _body([1, 2, 3, 4])).status_code == 429
    assert _infer(gw, _body([1, 2, 3, 4]), who="globex").status_code == 200


# deadlines ----------------------------------------------------------------------------------------


def test_a_body_that_never_arrives_is_a_504(gw: Served) -> None:
    gw.serve(request_timeout_seconds=0.3)
    head = (
        f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.tokens['acme']}\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(head + b'{"inputs": ')  # and nothing more
        status, headers, body = _read_reply(sock)
    assert (status, body) == (504, b'{"error":"request timed out"}')
    assert [r[4:] for r in _rows_of(gw, headers)] == [("failed:timeout", 504)]


def _read_reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    reply = b""
    while b"\r\n\r\n" not in reply and (chunk := sock.recv(65536)):
        reply += chunk
    top, _, rest = reply.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(rest) < int(headers.get("content-length", 0)) and (chunk := sock.recv(65536)):
        rest += chunk
    return int(lines[0].split()[1]), headers, rest


def test_a_request_cancelled_at_shutdown_is_audited(gw: Served) -> None:
    """Past the grace period the server cancels requests in flight: each still ends with a row."""
    seen = {r.seq for r in gw.store.audit_rows()}
    auth = [(b"authorization", f"Bearer {gw.tokens['acme']}".encode())]
    future = gw.asgi_later(auth, json.dumps(_body([99, 0, 0, 0])).encode())
    assert _wait_for(lambda: gw.metric("airlock_in_flight", tenant="acme") == 1)
    time.sleep(0.05)  # in the worker now
    future.cancel()
    assert _wait_for(lambda: len([r for r in gw.store.audit_rows() if r.seq not in seen]) == 2)
    new = [r for r in gw.store.audit_rows() if r.seq not in seen]
    key = gw.key_ids["acme"]
    assert [(r.tenant, r.key_id, r.model, r.model_digest, r.decision, r.status) for r in new] == [
        ("acme", key, "affine", DIGEST, "started", 0),
        ("acme", key, "affine", DIGEST, "failed:cancelled", 499),
    ]
    assert new[0].request_id == new[1].request_id
    assert _wait_for(lambda: gw.metric("airlock_in_flight", tenant="acme") == 0)
    time.sleep(HANG_SECONDS)  # the worker finishes its request and goes back to its lane


def _wait_for(predicate: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# mTLS: the certificate's CN must name the key's tenant ----------------------------------------------


@pytest.mark.parametrize(
    "client_ca, cn, status",
    [
        (None, None, 200),  # TLS without client certificates: the key alone
        (None, "globex", 200),
        ("ca.pem", "acme", 200),
        ("ca.pem", "globex", 401),  # another tenant's certificate
        ("ca.pem", None, 401),  # no certificate
        ("ca.pem", "", 401),
    ],
)
def test_mtls_certificate_must_name_the_keys_tenant(
    gw: Served, client_ca: str | None, cn: str | None, status: int
) -> None:
    """The TLS layer (._server, tested with real certificates in tests/gateway) puts the verified
    client certificate's CN into the request scope; the app compares it with the key's tenant."""
    tls = TlsConfig(Path("cert.pem"), Path("key.pem"), Path(client_ca) if client_ca else None)
    gw.state.config = replace(gw.config, tls=tls)
    auth = [(b"authorization", f"Bearer {gw.tokens['acme']}".encode())]
    extra: dict[str, Any] = {} if cn is None else {"state": {CLIENT_CN_KEY: cn}}
    got = gw.asgi(auth, json.dumps(_body([1, 2, 3, 4])).encode(), **extra)
    assert got[0] == status
    if status == 401:
        assert got[1] == b'{"error":"unauthenticated"}'
        assert gw.metric("airlock_unauthenticated_total") == 1


# text models (the /v1 routes themselves: tests/gateway/test_openai.py) ----------------------------


class _TextLane:
    """Stands in for a text lane where only its presence and readiness are read."""

    def __init__(self, ready: bool) -> None:
        self.ready = ready


def test_a_text_model_called_on_v2_is_a_400_before_anything_is_charged(gw: Served) -> None:
    del gw.state.lanes[("acme", "free")]
    gw.state.text_lanes[("acme", "free")] = _TextLane(True)  # type: ignore[assignment]
    got = _infer(gw, {"inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": [1]}]}, model="free")
    assert (got.status_code, got.json()) == (
        400,
        {"error": "invalid request: a text model: call it on /v1/chat/completions or /v1/completions"},
    )
    assert [r[4:] for r in _rows(gw, got)] == [("denied:malformed", 400)]  # no "started": nothing ran
    assert gw.metric("airlock_in_flight", tenant="acme") == 0


@pytest.mark.parametrize("ready", [True, False])
def test_readiness_counts_text_lanes(gw: Served, ready: bool) -> None:
    del gw.state.lanes[("acme", "free")]
    gw.state.text_lanes[("acme", "free")] = _TextLane(ready)  # type: ignore[assignment]
    with _client(gw) as client:
        got = client.get("/v2/models/free/ready")
        assert (got.status_code, got.json()) == (200 if ready else 503, {"name": "free", "ready": ready})
        health = client.get("/v2/health/ready")
        assert (health.status_code, health.json()) == (200 if ready else 503, {"ready": ready})


def test_the_v1_routes_are_mounted_with_their_methods(gw: Served) -> None:
    with _client(gw) as client:
        listed = client.get("/v1/models")
        assert (listed.status_code, listed.json()) == (200, {"object": "list", "data": []})
        for path in ("/v1/chat/completions", "/v1/completions"):
            got = client.get(path)
            assert (got.status_code, got.json()) == (405, {"error": "method not allowed"}), path
        assert client.post("/v1/models").status_code == 405


def test_audit_rows_carry_token_counts(gw: Served) -> None:
    import asyncio

    from airlock.gateway._app import _audit
    from airlock.gateway._keys import authenticate

    who = authenticate(gw.state.store, f"Bearer {gw.tokens['acme']}")
    assert who is not None
    gw.state.audit = None  # written inline
    asyncio.run(_audit(gw.state, who, "affine", "tokens-1", "allowed", 200, tokens=(3, 4)))
    asyncio.run(_audit(gw.state, who, "affine", "tokens-2", "allowed", 200))
    rows = {r.request_id: r for r in gw.state.store.audit_rows() if r.request_id.startswith("tokens-")}
    assert (rows["tokens-1"].prompt_tokens, rows["tokens-1"].completion_tokens) == (3, 4)
    assert (rows["tokens-2"].prompt_tokens, rows["tokens-2"].completion_tokens) == (0, 0)
