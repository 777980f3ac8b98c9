"""What the gateway does before authentication (src/airlock/gateway/_guard.py), on its own and fast:
the address key, the connection caps, the per-address token buckets with exact refills (``now`` is
passed in), and over real HTTP (uvicorn with the guarded h11 protocol on a real socket, in front of
a small echo app) the strict headers, the 429, the header deadline and the framing bounds, each at
N-1, N and N+1 where it has a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import uvicorn

from airlock.gateway._config import ServerConfig
from airlock.gateway._guard import (
    CHUNK_BYTES,
    CHUNK_GRACE,
    FDS_PER_LANE,
    FDS_RESERVED,
    HEADER_LINES,
    SINGLE,
    ConnectionGuard,
    PreAuth,
    address_key,
    connection_cap,
    guarded_protocol,
    raise_fd_limit,
)

# -- the address a limit applies to ---------------------------------------------------------------


@pytest.mark.parametrize(
    "host, key",
    [
        (None, "-"),
        ("", "-"),
        ("not an address", "-"),
        ("10.1.2.3", "10.1.2.3"),
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),  # an IPv4 address mapped into IPv6 is that IPv4 address
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),  # the next /64 is another address
        ("::1", "::/64"),
    ],
)
def test_address_key(host: str | None, key: str) -> None:
    assert address_key(host) == key


@pytest.mark.parametrize(
    "configured, fd_limit, lanes, cap",
    [
        (1024, 65536, 10, 1024),
        (1024, 1024, 0, 1024 - FDS_RESERVED),
        (1024, 1024, 3, 1024 - FDS_RESERVED - 3 * FDS_PER_LANE),
        (960, 1024, 0, 960),  # exactly what is left
        (959, 1024, 0, 959),
        (961, 1024, 0, 960),
        (1024, 10, 0, 1),  # never 0 or less: one connection still gets through
        (1024, FDS_RESERVED + 1, 0, 1),
        (1024, FDS_RESERVED + 2, 0, 2),
    ],
)
def test_connection_cap(configured: int, fd_limit: int, lanes: int, cap: int) -> None:
    assert (FDS_RESERVED, FDS_PER_LANE) == (64, 8)
    assert connection_cap(configured, fd_limit, lanes) == cap


def test_raise_fd_limit_raises_the_soft_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard if hard != resource.RLIM_INFINITY else 65536, 65536)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, wanted), hard))
        assert raise_fd_limit() == wanted
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (wanted, hard)
        assert raise_fd_limit() == wanted  # already there: unchanged
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- connection counting ---------------------------------------------------------------------------


def test_connection_guard_caps_in_all_and_per_address() -> None:
    guard = ConnectionGuard(
        replace(ServerConfig(), max_connections=100, max_connections_per_address=2), cap=3
    )
    assert guard.cap == 3
    assert guard.open("a") is None and guard.open("a") is None  # 2 of 2 for a
    assert guard.open("a") == "address_connections"  # 3rd from a: refused, not counted
    assert (guard.total, guard.by_address) == (2, {"a": 2})
    assert guard.open("b") is None  # 3 of 3 in all
    assert guard.open("c") == "connections"
    assert guard.refused == {
        "connections": 1, "address_connections": 1, "header_timeout": 0, "send_timeout": 0,
        "small_chunks": 0, "header_lines": 0, "obs_fold": 0, "repeated_length": 0,
        "evicted_idle": 0, "evicted_waiting": 0,
    }  # fmt: skip
    guard.close("a")
    assert (guard.total, guard.by_address) == (2, {"a": 1, "b": 1})
    assert guard.open("c") is None
    guard.close("b")
    guard.close("c")
    guard.close("a")
    assert (guard.total, guard.by_address) == (0, {})  # an address at zero is forgotten


def test_connection_guard_cap_defaults_to_the_configuration() -> None:
    guard = ConnectionGuard(replace(ServerConfig(), max_connections=2, max_connections_per_address=5))
    assert guard.cap == 2
    assert guard.open("a") is None and guard.open("b") is None and guard.open("c") == "connections"


# -- the per-address token buckets -----------------------------------------------------------------


def _preauth(**server: Any) -> PreAuth:
    config = replace(
        ServerConfig(), preauth_requests_per_second=2.0, preauth_burst=4, preauth_failures_per_second=0.5,
        preauth_failure_burst=2, preauth_tracked_addresses=3, **server,
    )  # fmt: skip
    return PreAuth(lambda scope, receive, send: None, config)  # type: ignore[arg-type,return-value]


def test_request_bucket_at_n_minus_1_n_n_plus_1() -> None:
    guard = _preauth()
    for _ in range(4):  # the burst
        assert guard._take("a", 0.0) == (0.0, "")
    assert guard._take("a", 0.0) == (0.5, "rate")  # 1 token at 2 per second
    assert guard._take("a", 0.25) == (0.25, "rate")  # half a token came back; the refusal took none
    assert guard._take("a", 0.5) == (0.0, "")  # exactly one token
    assert guard._take("a", 0.5) == (0.5, "rate")
    assert guard._take("b", 0.5) == (0.0, "")  # per address
    # refilled to the burst, not beyond
    for _ in range(4):
        assert guard._take("a", 1000.0) == (0.0, "")
    assert guard._take("a", 1000.0)[1] == "rate"


def test_failure_bucket_refuses_before_the_request_bucket() -> None:
    guard = _preauth()
    assert guard._take("a", 0.0) == (0.0, "")
    entry = guard.buckets["a"]
    entry.failures.tokens = 0.0
    entry.failures.stamp = 0.0
    assert guard._take("a", 0.0) == (2.0, "failures")  # 1 token at 0.5 per second
    assert entry.requests.tokens == 3.0  # a refusal takes no request token
    assert guard._take("a", 1.0) == (1.0, "failures")
    assert guard._take("a", 2.0) == (0.0, "")
    assert entry.failures.tokens == 1.0  # a request that passes takes no failure token


def test_failed_charges_the_callers_address() -> None:
    guard = _preauth()
    guard.failed(("10.0.0.1", 1234))
    guard.failed(("10.0.0.1", 1234))
    assert guard.buckets["10.0.0.1"].failures.tokens == pytest.approx(0.0, abs=1e-3)
    guard.failed(("10.0.0.1", 1234))  # never below zero: the debt is bounded
    assert guard.buckets["10.0.0.1"].failures.tokens >= 0.0
    assert guard.buckets["10.0.0.1"].requests.tokens == pytest.approx(4.0)
    guard.failed(None)
    assert guard.buckets["-"].failures.tokens == pytest.approx(1.0, abs=1e-3)
    assert guard._take("10.0.0.1", time.monotonic())[1] == "failures"


def test_table_of_addresses_is_bounded_and_never_forgets_a_debt() -> None:
    guard = _preauth()  # 3 addresses tracked
    t = guard.overflow.requests.stamp  # the overflow bucket was filled when the guard was made
    for key in ("a", "b", "c"):
        assert guard._take(key, t) == (0.0, "")
    # a is the least recently seen and still in debt (3 of 4 tokens): d shares the overflow bucket
    assert guard._take("d", t) == (0.0, "")
    assert list(guard.buckets) == ["a", "b", "c"]
    assert guard.overflow.requests.tokens == 3.0
    for _ in range(3):
        assert guard._take("e", t) == (0.0, "")  # the overflow bucket is shared: 4 in all
    assert guard._take("f", t) == (0.5, "rate")
    # half a second later a is full again (3 + 0.5 * 2 = 4): it is forgotten and g gets its own
    assert guard._take("g", t + 0.5) == (0.0, "")
    assert list(guard.buckets) == ["b", "c", "g"]
    assert guard.buckets["g"].requests.tokens == 3.0 and guard.buckets["g"].failures.tokens == 2.0
    # a seen address moves to the end: c is now the oldest
    assert guard._take("b", t + 0.5) == (0.0, "")
    assert list(guard.buckets) == ["c", "g", "b"]


def test_a_full_table_with_a_failure_debt_keeps_it() -> None:
    guard = _preauth()
    t = guard.overflow.requests.stamp
    for key in ("a", "b", "c"):
        guard._take(key, t)
    # a's requests are full again at 0.5 s, but it failed once: its failure bucket is not full
    guard.buckets["a"].failures.tokens = 1.0
    assert guard._take("d", t + 0.5) == (0.0, "")
    assert "a" in guard.buckets and "d" not in guard.buckets
    # the failure bucket refills at 0.5 per second: full at 2.5 s, then a is forgotten
    assert guard._take("d", t + 1.0) == (0.0, "")
    assert "d" not in guard.buckets
    assert guard._take("d", t + 2.5) == (0.0, "")
    assert list(guard.buckets) == ["b", "c", "d"]


# -- over real HTTP --------------------------------------------------------------------------------


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    """The application behind the guard: reads the body, answers its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    if scope["path"] == "/early":  # answers without reading: never reached here (see test)
        pass
    body = json.dumps({"size": size}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _early(scope: Any, receive: Any, send: Any) -> None:
    """Answers before reading the body (like a 401)."""
    if scope["path"] != "/early":
        await _echo(scope, receive, send)
        return
    body = b'{"error":"unauthenticated"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


BASE = replace(
    ServerConfig(), max_connections=1000, max_connections_per_address=1000, header_timeout_seconds=5.0,
    preauth_requests_per_second=100000.0, preauth_burst=100000, preauth_failures_per_second=100000.0,
    preauth_failure_burst=100000,
)  # fmt: skip


@dataclass
class Guarded:
    port: int
    guard: ConnectionGuard
    preauth: PreAuth

    def configure(self, **server: Any) -> None:
        self.guard.config = replace(BASE, **server)


@pytest.fixture(scope="module")
def guarded() -> Iterator[Guarded]:
    guard = ConnectionGuard(BASE)
    preauth = PreAuth(_early, BASE)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="unit-guard", daemon=True)
    thread.start()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # a plain coroutine function in front: uvicorn tells ASGI 3 from ASGI 2 by inspecting the
        # application, and a trampolined PreAuth.__call__ (mutmut) would read as ASGI 2
        await preauth(scope, receive, send)

    server = uvicorn.Server(
        uvicorn.Config(
            app, http=guarded_protocol(guard), lifespan="off", log_config=None, access_log=False,
            server_header=False, date_header=False, ws="none", timeout_keep_alive=30,
        )
    )  # fmt: skip

    tasks: list[asyncio.Task[None]] = []

    async def begin() -> None:
        tasks.append(loop.create_task(server.serve(sockets=[sock])))
        while not server.started:
            await asyncio.sleep(0.01)

    asyncio.run_coroutine_threadsafe(begin(), loop).result(30)
    try:
        yield Guarded(sock.getsockname()[1], guard, preauth)
    finally:

        async def end() -> None:
            server.should_exit = True

        asyncio.run_coroutine_threadsafe(end(), loop).result(10)
        time.sleep(0.3)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        sock.close()


@pytest.fixture
def g(guarded: Guarded) -> Iterator[Guarded]:
    guarded.configure()
    guarded.guard.cap = BASE.max_connections
    for key in guarded.guard.refused:
        guarded.guard.refused[key] = 0
    for key in guarded.preauth.refused:
        guarded.preauth.refused[key] = 0
    guarded.preauth.buckets.clear()
    guarded.preauth.rate, guarded.preauth.burst = 100000.0, 100000.0
    guarded.preauth.failure_rate, guarded.preauth.failure_burst = 100000.0, 100000.0
    yield guarded
    deadline = time.monotonic() + 5
    while guarded.guard.total and time.monotonic() < deadline:
        time.sleep(0.01)  # connections of this test are closed and uncounted before the next


def _connect(g: Guarded, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", g.port), timeout=10, source_address=(source, 0))


def _read(sock: socket.socket) -> bytes:
    """Everything until the server closes (b"" when it closed or reset without a reply)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One reply on a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(rest) < int(headers.get("content-length", "0")):
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), headers, rest


def _exchange(g: Guarded, request: bytes, source: str = "127.0.0.1") -> bytes:
    with _connect(g, source) as sock:
        sock.sendall(request)
        return _read(sock)


GET = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
AMBIGUOUS = b'{"error": "invalid request: ambiguous headers"}'


def test_a_plain_request_passes(g: Guarded) -> None:
    reply = _exchange(g, GET)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b'{"size": 0}')


@pytest.mark.parametrize("name", sorted(n.decode() for n in SINGLE))
def test_a_single_valued_header_twice_is_a_400_that_closes(g: Guarded, name: str) -> None:
    assert len(SINGLE) == 6
    value = {"content-length": "0", "transfer-encoding": "chunked", "host": "x"}.get(name, "1")
    with _connect(g) as sock:
        head = f"POST / HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\n{name.title()}: {value}\r\n"
        if name == "content-length":  # h11 merges equal values; two different ones are refused
            head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 1\r\n"
        if name == "host":
            head = "POST / HTTP/1.1\r\nHost: x\r\nHost: x\r\n"
        if name not in ("content-length", "transfer-encoding"):
            head += "Content-Length: 0\r\n"
        sock.sendall(head.encode() + b"\r\n" + (b"0\r\n\r\n" if name == "transfer-encoding" else b""))
        if name in ("content-length", "host", "transfer-encoding"):
            # h11 refuses these itself, before the guard sees the request
            assert _read(sock).startswith(b"HTTP/1.1 400 ")
            return
        status, headers, body = _reply(sock)
        assert (status, headers["connection"]) == (400, "close")
        assert _read(sock) == b""  # and closed
    assert (body, headers["content-type"]) == (AMBIGUOUS, "application/json")
    assert g.preauth.refused["duplicate_header"] == 1


def test_other_headers_may_repeat(g: Guarded) -> None:
    reply = _exchange(
        g,
        b"GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\nAccept: b\r\nX-A: 1\r\nX-A: 2\r\n\r\n"[:-2]
        + b"Connection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert g.preauth.refused["duplicate_header"] == 0


def test_length_and_chunked_together_is_a_400(g: Guarded) -> None:
    with _connect(g) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        status, headers, body = _reply(sock)
    assert (status, headers["connection"], body) == (400, "close", AMBIGUOUS)
    assert g.preauth.refused == {"rate": 0, "failures": 0, "duplicate_header": 0, "length_and_chunked": 1}


def test_429_from_the_source_address_bucket(g: Guarded) -> None:
    g.preauth.rate, g.preauth.burst = 0.5, 2.0
    for _ in range(2):
        assert _exchange(g, GET).startswith(b"HTTP/1.1 200 ")
    with _connect(g) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _reply(sock)
        assert (status, body) == (429, b'{"error": "rate limit exceeded: source address"}')
        assert headers["retry-after"] == "2"  # 1 token at 0.5 per second, rounded up
        assert "connection" not in headers  # no body: the connection stays usable
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _reply(sock)[0] == 429
    assert g.preauth.refused["rate"] == 2
    # another address has its own bucket
    assert _exchange(g, GET, source="127.0.0.2").startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "framing, closes",
    [(b"Content-Length: 5\r\n\r\nhello", True), (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", True),
     (b"Content-Length: 0\r\n\r\n", False), (b"Content-Length:  0 \r\n\r\n", False)],
)  # fmt: skip
def test_429_with_a_body_closes_the_connection(g: Guarded, framing: bytes, closes: bool) -> None:
    g.preauth.rate, g.preauth.burst = 0.001, 1.0
    assert _exchange(g, GET).startswith(b"HTTP/1.1 200 ")
    with _connect(g) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n" + framing)
        status, headers, _ = _reply(sock)
    assert status == 429
    assert headers["retry-after"] == "1000"
    assert (headers.get("connection") == "close") is closes


def test_failures_bucket_gives_a_429_before_the_app(g: Guarded) -> None:
    g.preauth.failure_rate, g.preauth.failure_burst = 0.25, 1.0
    g.preauth.failed(("127.0.0.1", 1))
    with _connect(g) as sock:
        sock.sendall(GET)
        status, headers, _ = _reply(sock)
    assert (status, headers["retry-after"]) == (429, "4")
    assert g.preauth.refused["failures"] == 1 and g.preauth.refused["rate"] == 0


@pytest.mark.parametrize("body", [b"hello", b""])
def test_a_reply_before_the_body_was_read_closes_the_connection(g: Guarded, body: bytes) -> None:
    """Otherwise the server would go on reading (and dropping) a body the caller may trickle."""
    with _connect(g) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        status, headers, _ = _reply(sock)
        assert status == 401
        assert (headers.get("connection") == "close") is bool(body)
    with _connect(g) as sock:  # the body read first: the connection is kept
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        status, headers, data = _reply(sock)
        assert (status, data, headers.get("connection")) == (200, b'{"size": 5}', None)
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"
        )
        status, headers, data = _reply(sock)
        assert (status, data, headers.get("connection")) == (200, b'{"size": 5}', None)


# -- connection caps and deadlines -----------------------------------------------------------------


def _wait(predicate: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_connection_cap_at_n_minus_1_n_n_plus_1(g: Guarded) -> None:
    """At the cap (N) a newcomer (N+1) takes the place of the connection that has waited longest
    for its head (review 3: strangers holding the cap locked tenants out); the count stays N."""
    g.guard.cap = 2
    first = _connect(g)
    assert _wait(lambda: g.guard.total == 1)  # N-1: admitted
    second = _connect(g)
    try:
        assert _wait(lambda: g.guard.total == 2)  # N: admitted
        with _connect(g) as third:  # N+1: admitted, the stalest waiting connection gives way
            third.sendall(GET)
            assert _read(third).startswith(b"HTTP/1.1 200 ")
        assert _read(first) == b""  # closed without a reply
        assert g.guard.refused["evicted_waiting"] == 1 and g.guard.refused["connections"] == 0
        assert _wait(lambda: g.guard.total == 1)  # second only: every count was given back
        second.sendall(GET)
        assert _read(second).startswith(b"HTTP/1.1 200 ")
    finally:
        first.close()
        second.close()


def test_per_address_cap(g: Guarded) -> None:
    g.configure(max_connections_per_address=1)
    one = _connect(g)
    try:
        assert _wait(lambda: g.guard.total == 1)
        with _connect(g) as two:
            assert _read(two) == b""
        assert g.guard.refused["address_connections"] == 1
        with _connect(g, "127.0.0.3") as other:  # another address
            other.sendall(GET)
            assert _read(other).startswith(b"HTTP/1.1 200 ")
    finally:
        one.close()


def test_header_deadline_closes_a_slow_head(g: Guarded) -> None:
    g.configure(header_timeout_seconds=0.3)
    with _connect(g) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        assert _read(sock) == b""
        assert time.monotonic() - started < 5
    assert g.guard.refused["header_timeout"] == 1


def test_a_head_finished_within_its_deadline_is_served(g: Guarded) -> None:
    g.configure(header_timeout_seconds=1.0)
    with _connect(g) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.3)
        sock.sendall(b"Host: x\r\n\r\n")
        assert _reply(sock)[0] == 200
        # each request on a kept-alive connection gets its own deadline, counted from its first byte
        time.sleep(1.2)
        sock.sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.3)
        sock.sendall(b"Host: x\r\n\r\n")
        assert _reply(sock)[0] == 200
        # and a deadline is armed again for the next head
        sock.sendall(b"GET / HTTP/1.1\r\n")
        assert _read(sock) == b""
    assert g.guard.refused["header_timeout"] == 1


def _head(lines: int) -> bytes:
    """A request head with ``lines`` header lines."""
    extra = "".join(f"X-{i}: v\r\n" for i in range(lines - 2))
    return f"GET / HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode()


@pytest.mark.parametrize(
    "lines, ok", [(HEADER_LINES - 1, True), (HEADER_LINES, True), (HEADER_LINES + 1, False)]
)
def test_header_lines_at_n_minus_1_n_n_plus_1(g: Guarded, lines: int, ok: bool) -> None:
    assert HEADER_LINES == 100
    reply = _exchange(g, _head(lines))
    assert reply.startswith(b"HTTP/1.1 200 ") is ok
    if not ok:
        assert reply == b"" and g.guard.refused["header_lines"] == 1


def test_header_lines_are_counted_before_the_head_is_complete(g: Guarded) -> None:
    with _connect(g) as sock:
        sock.sendall(_head(HEADER_LINES + 5)[:-4])  # no blank line yet
        assert _read(sock) == b""
    assert g.guard.refused["header_lines"] == 1


def _chunks(sizes: list[int], trailers: int = 0) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (n, b"a" * n) for n in sizes)
    tail = b"".join(b"X-T%d: v\r\n" % i for i in range(trailers))
    return (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + body
        + b"0\r\n"
        + tail
        + b"\r\n"
    )


@pytest.mark.parametrize(
    "count, ok", [(CHUNK_GRACE - 1, True), (CHUNK_GRACE, True), (CHUNK_GRACE + 1, False)]
)
def test_small_chunks_at_n_minus_1_n_n_plus_1(g: Guarded, count: int, ok: bool) -> None:
    assert (CHUNK_GRACE, CHUNK_BYTES) == (64, 1024)
    reply = _exchange(g, _chunks([1] * count))
    assert reply.startswith(b"HTTP/1.1 200 ") is ok
    if ok:
        assert reply.endswith(b'{"size": %d}' % count)
    else:
        assert reply == b"" and g.guard.refused["small_chunks"] == 1


@pytest.mark.parametrize("extra, ok", [(0, True), (1, False)])
def test_payload_earns_more_chunks(g: Guarded, extra: int, ok: bool) -> None:
    """One more chunk per CHUNK_BYTES of payload so far: 2 KiB earns two more."""
    sizes = [2 * CHUNK_BYTES] + [1] * (CHUNK_GRACE + 1 + extra)
    reply = _exchange(g, _chunks(sizes))
    assert reply.startswith(b"HTTP/1.1 200 ") is ok


def test_chunk_count_starts_again_for_each_request(g: Guarded) -> None:
    with _connect(g) as sock:
        for _ in range(3):
            sock.sendall(_chunks([1] * CHUNK_GRACE).replace(b"Connection: close\r\n", b""))
            assert _reply(sock)[2] == b'{"size": %d}' % CHUNK_GRACE


@pytest.mark.parametrize("trailers, ok", [(0, True), (HEADER_LINES, True), (HEADER_LINES + 1, False)])
def test_trailer_lines_are_bounded(g: Guarded, trailers: int, ok: bool) -> None:
    reply = _exchange(g, _chunks([3], trailers))
    assert reply.startswith(b"HTTP/1.1 200 ") is ok
    if not ok:
        assert g.guard.refused["header_lines"] == 1
