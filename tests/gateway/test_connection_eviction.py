"""At the connection cap, a newcomer takes the place of the stalest connection that does nothing.

Review 3 (F4 variant): strangers holding idle keep-alive connections owned the whole global cap
and locked every tenant out. Now, at the cap, the connection idle longest between requests is
closed for a newcomer, else the one that has waited longest for its TLS handshake or request head;
a connection whose request is being read, run or answered is never closed for a newcomer, and the
per-address cap still refuses. These tests put each kind of connection at the cap over real
sockets (and TLS) and check which one gives way.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from airlock._cli import main
from tests.gateway.test_hardening import BODY, _closed_by_server, _raw, make_gateway

__all__ = ["make_gateway"]

pytestmark = pytest.mark.xdist_group("review3")

HEALTH = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _connect(port: int, last: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(f"127.0.0.{last}", 0))


def _kept_alive(port: int, last: int) -> socket.socket:
    """A connection that made one request and is kept alive, idle."""
    sock = _connect(port, last)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"live":true}'):
        answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")
    return sock


def test_the_longest_idle_connection_gives_way_first(make_gateway: Any) -> None:
    gateway = make_gateway(
        server="max_connections = 6\nmax_connections_per_address = 6\nkeep_alive_seconds = 30\n"
    )
    idle = [_kept_alive(gateway.port, 2) for _ in range(3)]
    stuck = [_connect(gateway.port, 3) for _ in range(3)]  # before any byte of a head
    time.sleep(0.2)
    assert gateway.running.gateway.state.guard.total == 6
    newcomers = []
    for n in range(3):  # three newcomers, kept alive too: the three idle connections go, oldest first
        newcomers.append(_kept_alive(gateway.port, 9))
        assert _closed_by_server(idle[n], 3.0)
        assert all(not _closed_by_server(sock, 0.05) for sock in idle[n + 1 :])
    # a fourth: the first newcomer is now the one idle longest; idle ones go before stuck ones
    newcomers.append(_kept_alive(gateway.port, 9))
    assert _closed_by_server(newcomers[0], 3.0)
    assert all(not _closed_by_server(sock, 0.05) for sock in stuck + newcomers[1:])
    refused = gateway.running.gateway.state.guard.refused
    assert (refused["evicted_idle"], refused["evicted_waiting"], refused["connections"]) == (4, 0, 0)
    assert gateway.running.gateway.state.guard.total == 6
    for sock in idle + stuck + newcomers:
        sock.close()


def test_a_connection_at_work_is_never_closed_for_a_newcomer(make_gateway: Any) -> None:
    """Connections whose request body is still arriving are at work: a newcomer is refused."""
    gateway = make_gateway(
        server="max_connections = 4\nmax_connections_per_address = 4\nrequest_timeout_seconds = 30\n"
    )
    body = json.dumps(BODY).encode()
    busy = []
    for _ in range(4):
        sock = _connect(gateway.port, 2)
        sock.sendall(
            b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {gateway.tokens['acme']}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:5]
        )  # fmt: skip
        busy.append(sock)
    time.sleep(0.3)
    assert _raw(gateway.port, HEALTH, source="127.0.0.9", timeout=3) == b""  # refused, nobody evicted
    assert gateway.running.gateway.state.guard.refused["connections"] == 1
    for sock in busy:  # every request at work completes
        sock.sendall(body[5:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        sock.close()


def test_the_per_address_cap_is_not_relaxed(make_gateway: Any) -> None:
    gateway = make_gateway(
        server="max_connections = 10\nmax_connections_per_address = 3\nkeep_alive_seconds = 30\n"
    )
    idle = [_kept_alive(gateway.port, 2) for _ in range(3)]
    assert _raw(gateway.port, HEALTH, source="127.0.0.2", timeout=3) == b""  # its own cap: refused
    assert all(not _closed_by_server(sock, 0.05) for sock in idle)
    assert gateway.running.gateway.state.guard.refused["address_connections"] == 1
    for sock in idle:
        sock.close()


def test_a_tls_handshake_that_waits_gives_way_to_a_newcomer(make_gateway: Any, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert main(["certs", "dev", "--out", str(certs), "--host", "127.0.0.1"]) == 0
    tls = f'\n[tls]\ncert = "{certs / "server.pem"}"\nkey = "{certs / "server.key"}"\n'
    gateway = make_gateway(
        server="max_connections = 4\nmax_connections_per_address = 4\nheader_timeout_seconds = 30\n",
        extra=tls,
    )
    silent = [_connect(gateway.port, 2) for _ in range(4)]  # no ClientHello ever sent
    time.sleep(0.3)
    assert gateway.running.gateway.state.guard.total == 4
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with _connect(gateway.port, 9) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(HEALTH)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert _closed_by_server(silent[0], 3.0)
    assert all(not _closed_by_server(other, 0.05) for other in silent[1:])
    assert gateway.running.gateway.state.guard.refused["evicted_waiting"] == 1
    for other in silent:
        other.close()
