"""Variations of issue 12's attacks, found by attacking the F1-F11 fixes as an outsider.

Each test drives a real gateway over real sockets on loopback (127.0.0.x are all loopback
addresses, so several source addresses are available) and failed before its fix.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from airlock._cli import main
from tests.gateway.test_hardening import _audit_rows, _closed_by_server, _raw, make_gateway

__all__ = ["make_gateway"]  # the fixture, re-exported for pytest

HEALTH = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def test_forgetting_an_address_never_forgives_its_failures(make_gateway: Any) -> None:
    """F1 variant: the table of per-address buckets is bounded (least recently seen forgotten first).
    Cycling through more addresses than it holds made every address new again, with a full burst of
    failed authentications each time: 401s (each an audit row) without any bound. An address still
    in debt is now never forgotten; newcomers while the table is full of debtors share one bucket."""
    gateway = make_gateway(
        server="preauth_failure_burst = 2\npreauth_failures_per_second = 0.2\npreauth_tracked_addresses = 4\n"
    )
    statuses = []
    started = time.monotonic()
    for _ in range(5):
        for last in range(2, 10):  # 8 addresses, twice what the table holds
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{last}")
            with httpx.Client(base_url=gateway.url, transport=transport, timeout=10) as client:
                reply = client.post(
                    "/v2/models/affine/infer", json={}, headers={"Authorization": "Bearer no"}
                )
                statuses.append(reply.status_code)
    elapsed = time.monotonic() - started
    assert set(statuses) <= {401, 429}
    # at most: 4 tracked addresses' bursts, the shared newcomers' burst, and what refills meanwhile
    allowed = 4 * 2 + 2 + 5 * 0.2 * elapsed + 1
    assert statuses.count(401) <= allowed, (statuses.count(401), allowed)
    assert len(gateway.running.gateway.state.preauth.buckets) == 4


def test_tls_connections_count_against_the_cap_from_accept_not_from_the_end_of_the_handshake(
    make_gateway: Any, tmp_path: Path
) -> None:
    """F4 variant (slow TLS handshake): with TLS the guard saw a connection only once its handshake
    was done, so connections that never send a ClientHello were not counted at all: each held a file
    descriptor for the handshake deadline, beyond max_connections, and enough of them exhaust the
    descriptors (accept() then fails and every caller stalls). They are now counted from accept()."""
    certs = tmp_path / "certs"
    assert main(["certs", "dev", "--out", str(certs), "--host", "127.0.0.1"]) == 0
    tls = f'\n[tls]\ncert = "{certs / "server.pem"}"\nkey = "{certs / "server.key"}"\n'
    gateway = make_gateway(
        server="header_timeout_seconds = 5\nmax_connections = 8\nmax_connections_per_address = 4\n", extra=tls
    )
    silent = []
    # five from 127.0.0.2 (one over the per-address cap), then four each from 127.0.0.3 .. 127.0.0.5;
    # none of them ever says a word
    for source in ["127.0.0.2"] * 5 + ["127.0.0.3", "127.0.0.4", "127.0.0.5"] * 4:
        silent.append(socket.create_connection(("127.0.0.1", gateway.port), source_address=(source, 0)))
    time.sleep(0.3)
    closed = sum(_closed_by_server(sock, 0.2) for sock in silent)
    assert closed == len(silent) - 8, closed  # closed at once, not after the 5 s handshake deadline
    assert gateway.running.gateway.state.guard.total == 8
    refused = gateway.running.gateway.state.guard.refused
    # at the global cap each newcomer took the place of the handshake waiting longest (review 3):
    # the count never went past the cap, and the eight left open are the last eight accepted
    assert refused["address_connections"] == 1 and refused["connections"] == 0
    assert refused["evicted_waiting"] == len(silent) - 9
    assert not any(_closed_by_server(sock, 0.05) for sock in silent[-8:])
    for sock in silent:
        sock.close()
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", gateway.port), source_address=("127.0.0.9", 0)) as probe:
        assert not _closed_by_server(probe, 0.5)  # under the caps again: it may take its handshake time
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    transport = httpx.HTTPTransport(verify=context)
    with httpx.Client(
        base_url=f"https://127.0.0.1:{gateway.port}", transport=transport, timeout=10
    ) as client:
        assert client.get("/v2/health/live").status_code == 200
    time.sleep(0.3)
    assert gateway.running.gateway.state.guard.total == 0  # every count was given back


def _chunked(port: int, body: bytes, sizes: list[int], token: str | None, source: str = "127.0.0.1") -> bytes:
    """POST ``body`` to affine in chunks of ``sizes`` (the last chunk takes the rest), all sent at once."""
    head = b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
    if token:
        head += b"Authorization: Bearer " + token.encode() + b"\r\n"
    parts, at = [], 0
    for size in [*sizes, len(body)]:
        piece = body[at : at + size]
        at += len(piece)
        if piece:
            parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    return _raw(port, head + b"\r\n" + b"".join(parts) + b"0\r\n\r\n", source=source, timeout=10)


def test_a_body_of_tiny_chunks_is_cut_off_before_it_stalls_the_event_loop(make_gateway: Any) -> None:
    """F2/F4 variant, no key needed: h11 parses each chunk in Python on the event loop, before the
    application (and authentication) sees the request. 240 KB of one-byte chunks in one socket read
    stalled every caller for ~0.7 s, and a stranger could repeat it at will. Now a body may have
    CHUNK_GRACE chunks plus one per CHUNK_BYTES of payload; beyond that the connection is aborted."""
    gateway = make_gateway()
    payload = b"x" * 40000
    started = time.monotonic()
    for last in range(2, 6):
        answer = _chunked(gateway.port, payload, [1] * 40000, None, source=f"127.0.0.{last}")
        assert answer == b""  # aborted: no 401 after ~0.7 s of parsing
    assert time.monotonic() - started < 1.5  # was ~3 s of event-loop time for these four
    assert gateway.running.gateway.state.guard.refused["small_chunks"] == 4
    assert 'airlock_preauth_refused_total{reason="small_chunks"} 4.0' in gateway.metrics()


def test_the_chunk_bound_is_exact_and_leaves_ordinary_chunked_bodies_alone(make_gateway: Any) -> None:
    """N-1/N/N+1 around the bound: 64 chunks (63 of one byte) pass, 65 do not; a 60 KB body in
    512-byte chunks (118 chunks, within one per KiB plus 64) is served."""
    from airlock.gateway._guard import CHUNK_BYTES, CHUNK_GRACE

    assert (CHUNK_GRACE, CHUNK_BYTES) == (64, 1024)
    gateway = make_gateway()
    token = gateway.tokens["acme"]
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
    for chunks, served in ((63, True), (64, True), (65, False)):
        answer = _chunked(gateway.port, body, [1] * (chunks - 1), token)
        assert answer.startswith(b"HTTP/1.1 200") is served, (chunks, answer[:80])
        assert (answer == b"") is not served
    big = body[:-1] + b" " * (60000 - len(body)) + b"}"
    answer = _chunked(gateway.port, big, [512] * 200, token)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]


def _head(lines: int) -> bytes:
    """A health request (Connection: close) whose head has ``lines`` header lines in all."""
    fields = b"".join(b"X-%d: y\r\n" % i for i in range(lines - 2))
    return b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + fields + b"Connection: close\r\n\r\n"


def test_a_head_of_thousands_of_tiny_header_lines_is_refused_before_it_is_parsed(make_gateway: Any) -> None:
    """F4 variant, no key needed: h11 parses each header line in Python (~6 us) on the event loop
    before anything else runs; its 16 KiB head bound allows ~3000 lines, ~20 ms per request, and
    the per-address bucket (1000 requests/s) is taken only after that. A head may now have 100
    header lines (N-1/N/N+1 below); more abort the connection before h11 parses a line."""
    from airlock.gateway._guard import HEADER_LINES

    assert HEADER_LINES == 100
    gateway = make_gateway()
    for lines, served in ((99, True), (100, True), (101, False)):
        answer = _raw(gateway.port, _head(lines))
        assert answer.startswith(b"HTTP/1.1 200") is served, (lines, answer[:60])
        assert (answer == b"") is not served
    # the same head with bare LF line ends, and one arriving a few lines at a time
    flood = b"GET /v2/health/live HTTP/1.1\nHost: x\n" + b"a:b\n" * 3000 + b"\n"
    assert _raw(gateway.port, flood) == b""
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(40):
                sock.sendall(b"a:b\r\n" * 5)
                time.sleep(0.01)
        assert _closed_by_server(sock, 2.0)
    refused = gateway.running.gateway.state.guard.refused["header_lines"]
    assert refused == 3
    # many small pipelined requests are each counted on their own: all served
    pipelined = (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"a:b\r\n" * 60 + b"\r\n") * 3
    answer = _raw(
        gateway.port, pipelined + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.count(b"HTTP/1.1 200") == 4


UNDECLARED = """
[models.open]
path = "affine.onnx"
runtime = "onnx"
tenants = ["acme", "globex"]
"""


def test_inputs_the_model_refuses_are_a_400_and_never_restart_its_worker(make_gateway: Any) -> None:
    """A model without declared inputs gets whatever a tenant sends; when the model raised on it,
    the worker (alive, its protocol intact) was treated as crashed: killed, a new sandbox started,
    503 "being restarted" to the caller and ``failed:worker`` in the audit. Any tenant could keep its
    lanes restarting (a sandbox start costs the whole machine CPU) with one wrong shape per request.
    A model's own error is now a 400 with a fixed text, audited ``failed:model``; the worker stays."""
    gateway = make_gateway(models=UNDECLARED)
    lane = gateway.running.gateway.state.lanes[("acme", "open")]
    pids = lane.pids()
    wrong = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    right = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    with gateway.client("acme") as client:
        for _ in range(3):
            reply = client.post("/v2/models/open/infer", json=wrong)
            assert reply.status_code == 400, reply.text
            assert reply.json() == {"error": "invalid request: the model could not run on these inputs"}
            request_id = reply.headers["x-request-id"]
        assert client.post("/v2/models/open/infer", json=right).status_code == 200
    assert lane.restarted == 0 and lane.pids() == pids
    assert _audit_rows(gateway.config.server.state, request_id) == [
        ("open", "started", 0),
        ("open", "failed:model", 400),
    ]


def test_trailers_of_a_chunked_body_are_held_to_the_same_line_bound(make_gateway: Any) -> None:
    """The header-line bound, through the back door: a chunked body's trailers are header lines
    too, parsed by h11 in Python before authentication. 100 trailer lines pass, 101 do not."""
    gateway = make_gateway()
    token = gateway.tokens["acme"]
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
    head = b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
    for lines, served in ((100, True), (101, False), (3000, False)):
        trailers = b"".join(b"T-%d: y\r\n" % i for i in range(lines))
        for last in (b"0\r\n", b"000;ext=1\r\n"):
            request = head + b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
            request += b"%x\r\n%s\r\n" % (len(body), body) + last + trailers + b"\r\n"
            answer = _raw(gateway.port, request)
            assert answer.startswith(b"HTTP/1.1 200") is served, (lines, last, answer[:60])
    assert gateway.running.gateway.state.guard.refused["header_lines"] == 4


def test_a_client_that_leaves_mid_body_is_audited_as_disconnected_not_as_an_internal_error(
    make_gateway: Any,
) -> None:
    """A caller that hangs up (or sends a chunk size h11 refuses) in the middle of its body was
    recorded as ``failed:internal`` 500 with an error log line each time, which any tenant could
    repeat at will: a false alarm in the audit and the logs. It is ``failed:disconnected`` (499)."""
    gateway = make_gateway()
    token = gateway.tokens["acme"].encode()
    head = b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + b"\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(head + b"Content-Length: 1000\r\n\r\n" + b'{"inputs": [')
        time.sleep(0.3)
    _raw(gateway.port, head + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffffffff\r\nxx")
    time.sleep(0.5)
    db = sqlite3.connect(gateway.config.server.state)
    try:
        rows = db.execute("SELECT decision, status FROM audit WHERE tenant = 'acme' ORDER BY seq").fetchall()
    finally:
        db.close()
    assert rows == [("failed:disconnected", 499)] * 2


def test_the_admin_port_has_a_connection_cap_and_a_header_deadline(make_gateway: Any) -> None:
    """F4 on the other port: /metrics (loopback) was served by plain h11 with no cap and no header
    deadline; silent connections there stayed open for good, and each took a descriptor from the
    reserve that keeps the API listener's accept() working. The admin port now has both."""
    from airlock.gateway._guard import ADMIN_CONNECTIONS

    gateway = make_gateway(server="header_timeout_seconds = 2\n")
    port = gateway.running.gateway.admin_port
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(ADMIN_CONNECTIONS + 24)]
    for sock in silent:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
    time.sleep(0.3)
    closed = sum(_closed_by_server(sock, 0.01) for sock in silent)
    refused = gateway.running.gateway.state.admin_guard.refused
    assert closed == 24, (closed, refused)  # over the cap: closed at once
    assert all(_closed_by_server(sock, 4.0) for sock in silent)  # the rest: at the header deadline
    for sock in silent:
        sock.close()
    time.sleep(0.2)
    assert "airlock_connections" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def test_integers_at_every_datatypes_edges_are_decided_exactly(make_gateway: Any) -> None:
    """F10 variant, the other way round: numpy guesses one type for a JSON list, and for UINT64
    values >= 2**63 next to smaller ones it guessed float64, so ``[0, 18446744073709551615]`` (both
    in range) was refused; an integer beyond 64 bits was refused for FP32 although it fits.
    Those lists are now decided value by value: in range is accepted, one past either edge is not."""
    import json

    from airlock.gateway._tensors import TensorError, parse_infer_request

    def parse(datatype: str, data: list[Any]) -> list[Any]:
        body = {"inputs": [{"name": "x", "datatype": datatype, "shape": [len(data)], "data": data}]}
        values: list[Any] = parse_infer_request(json.dumps(body).encode(), ()).inputs["x"].tolist()
        return values

    edges = {
        "INT8": 8,
        "INT16": 16,
        "INT32": 32,
        "INT64": 64,
        "UINT8": -8,
        "UINT16": -16,
        "UINT32": -32,
        "UINT64": -64,
    }
    for datatype, bits in edges.items():
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if bits > 0 else (0, 2**-bits - 1)
        assert parse(datatype, [low, high, 1]) == [low, high, 1]
        for outside in ([low - 1, high], [low, high + 1], [1.0, high], [True, high + 1]):
            with pytest.raises(TensorError):
                parse(datatype, outside)
    # over real HTTP: a 71-bit integer is a float32 value like any other
    gateway = make_gateway()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [2**70, 1, 2, 3]}]}
    with gateway.client("acme") as client:
        reply = client.post("/v2/models/affine/infer", json=body)
        assert reply.status_code == 200, reply.text
        body["inputs"][0]["data"] = [2**200, 1, 2, 3]
        assert client.post("/v2/models/affine/infer", json=body).status_code == 400


def test_emptying_the_audit_log_and_removing_the_head_file_is_detected(
    make_gateway: Any, capsys: Any
) -> None:
    """F7 variant: deleting the head file was caught only while rows remained; deleting every row
    (or the whole database) together with the head file passed as an intact, empty log. The head
    file is now written when the gateway starts, before it serves, so a gateway that has run (its
    key file exists) always has one, and a missing head file fails verification at any row count."""
    gateway = make_gateway(extra="[audit]\nhead_interval_seconds = 0.2\n")
    assert gateway.config.audit.head_file.exists()  # before any request
    with gateway.client("acme") as client:
        assert client.post("/v2/models/affine/infer", json={"inputs": []}).status_code == 400
    time.sleep(0.5)  # the periodic head now names the rows
    config = str(gateway.config.source)
    assert main(["audit", "verify", "--config", config]) == 0
    db = sqlite3.connect(gateway.config.server.state)
    db.execute("DELETE FROM audit")
    db.commit()
    db.close()
    time.sleep(0.5)  # the gateway does not bless the shorter log with a new head
    assert main(["audit", "verify", "--config", config]) == 1
    gateway.config.audit.head_file.unlink()
    capsys.readouterr()
    assert main(["audit", "verify", "--config", config]) == 1
    assert "no head file" in capsys.readouterr().out
