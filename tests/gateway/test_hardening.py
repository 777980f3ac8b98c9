"""Issue 12, findings F1-F11: each attack over real HTTP (uvicorn, real sockets, sandboxed workers).

Every test here failed on the gateway before the fix; each docstring names the finding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from airlock._cli import main
from airlock.gateway import Gateway, GatewayConfig, create_key, load_config, open_store
from airlock.gateway._observe import JsonFormatter
from tests.gateway import _models
from tests.gateway.conftest import Env, Running, write_config

AFFINE = """
[models.affine]
path = "affine.onnx"
runtime = "onnx"
tenants = ["acme", "globex"]
inputs = [{ name = "x", datatype = "FP32", shape = [-1, 4] }]
"""
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


class _Gateway:
    """A gateway of its own for one test (its limits differ from the shared one's)."""

    def __init__(self, folder: Path, server: str = "", models: str = AFFINE, extra: str = "") -> None:
        _models.affine(folder / "affine.onnx")
        _models.slow(folder / "slow.onnx", steps=120)
        self.config: GatewayConfig = load_config(write_config(folder, models + extra, server=server))
        store = open_store(self.config)
        self.tokens = {}
        for tenant in ("acme", "globex"):
            store.add_tenant(tenant, None)
            self.tokens[tenant] = create_key(store, tenant)[1]
        store.close()
        self.running = Running(Gateway(self.config))
        self.port = self.running.gateway.port
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, tenant: str | None = None, source: str = "127.0.0.1") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[tenant]}"} if tenant else {}
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.url, headers=headers, timeout=20, transport=transport)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.running.gateway.admin_port}/metrics", timeout=10).text

    def stop(self) -> None:
        self.running.stop()


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Any]:
    started: list[_Gateway] = []

    def make(server: str = "", models: str = AFFINE, extra: str = "") -> _Gateway:
        gateway = _Gateway(tmp_path, server, models, extra)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        if not gateway.running.loop.is_closed():  # a test may have stopped it itself
            gateway.stop()


def _raw(port: int, data: bytes, source: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _token(env: Env) -> str:
    return env.tokens["acme"]


def _post(env: Env, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {_token(env)}"}
    return httpx.post(f"{env.url}/v2/models/affine/infer", content=body, headers=headers, timeout=20)


def _audit_rows(path: Path, request_id: str) -> list[tuple[str, str, int]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT model, decision, status FROM audit WHERE request_id = ? ORDER BY seq", (request_id,)
        ).fetchall()
    finally:
        db.close()


# F1 -------------------------------------------------------------------------------------------


def _state_bytes(config: GatewayConfig) -> int:
    state = config.server.state
    return sum(p.stat().st_size for p in state.parent.glob(state.name + "*") if p.is_file())


def test_f1_a_stranger_flood_is_throttled_and_stores_nothing_verbatim(make_gateway: Any) -> None:
    """F1: unique 8000-character model names without a key: per-address 429s before authentication,
    one metric label, bounded audit fields and log lines, a bounded table of addresses."""
    gateway = make_gateway(
        server="preauth_failures_per_second = 20\npreauth_failure_burst = 40\npreauth_tracked_addresses = 4\n"
    )
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(JsonFormatter().format(record))  # type: ignore[method-assign]
    logger = logging.getLogger("airlock.gateway")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    metrics_before = len(gateway.metrics())
    try:
        statuses = []
        started = time.monotonic()
        with gateway.client() as client:
            for i in range(400):
                name = f"{i:05d}" + "x" * 7995
                statuses.append(client.post(f"/v2/models/{name}/infer", json=BODY).status_code)
        elapsed = time.monotonic() - started
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert set(statuses) <= {401, 429}
    allowed = 40 + 20 * elapsed + 2
    assert statuses.count(401) <= allowed and statuses.count(429) >= 400 - allowed
    text = gateway.metrics()
    assert "xxxxxxxxxx" not in text and len(text) - metrics_before < 4096
    assert 'airlock_requests_total{model="",status="401",tenant=""}' in text
    assert 'airlock_preauth_refused_total{reason="failures"}' in text
    db = sqlite3.connect(gateway.config.server.state)
    widest, rows = db.execute(
        "SELECT MAX(LENGTH(model) + LENGTH(tenant) + LENGTH(key_id) + LENGTH(request_id)), COUNT(*) "
        "FROM audit WHERE decision = 'denied:unauthenticated'"
    ).fetchone()
    db.close()
    assert rows == statuses.count(401) and widest <= 64  # 32 hex request id, the rest empty
    assert _state_bytes(gateway.config) < 4 * 1024 * 1024  # the WAL checkpoints at ~4 MB
    assert lines and max(len(line) for line in lines) < 2048 and not any("x" * 600 in ln for ln in lines)
    # buckets are per address: another address is served at once; the table stays bounded
    for last in range(2, 10):
        with gateway.client("acme", source=f"127.0.0.{last}") as client:
            assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
    preauth = gateway.running.gateway.state.preauth
    assert len(preauth.buckets) == 4


# F2 -------------------------------------------------------------------------------------------


def test_f2_a_tenants_big_body_is_parsed_in_its_own_codec_and_never_stalls_another(make_gateway: Any) -> None:
    """F2: while tenant A's large body is being parsed (its codec process is held stopped, so the
    parse is certainly in progress), tenant B's large and small requests are served."""
    gateway = make_gateway(server="offload_bytes = 1024\nrequest_timeout_seconds = 30\n")
    big = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1500, 4], "data": [[1, 2, 3, 4]] * 1500}]}
    state = gateway.running.gateway.state
    with gateway.client("acme") as a:
        first = a.post("/v2/models/affine/infer", json=big)
        assert first.status_code == 200 and first.json()["outputs"][0]["shape"] == [1500, 3]
    (codec,) = state.codecs.pids("acme")
    os.kill(codec, signal.SIGSTOP)
    result: dict[str, int] = {}

    def call_a() -> None:
        with gateway.client("acme") as a:
            result["a"] = a.post("/v2/models/affine/infer", json=big).status_code

    thread = threading.Thread(target=call_a)
    try:
        thread.start()
        deadline = time.monotonic() + 10
        while state.limiter._in_flight.get("acme", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with gateway.client("globex") as b:
            assert b.post("/v2/models/affine/infer", json=BODY).status_code == 200
            assert b.post("/v2/models/affine/infer", json=big).status_code == 200
        assert thread.is_alive() and "a" not in result  # A is still waiting for its own codec
        assert state.codecs.pids("globex") and codec not in state.codecs.pids("globex")
    finally:
        os.kill(codec, signal.SIGCONT)
        thread.join(30)
    assert result["a"] == 200


# F3 -------------------------------------------------------------------------------------------


def test_f3_an_impossible_shape_is_a_400_with_an_audit_row(env: Env) -> None:
    """F3: shape [10**30, 0] with no data was an uncaught ValueError: 500 and no audit row."""
    for shape in ([10**30, 0], [2**62, 2**62, 0], [2**41]):
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]}
        response = _post(env, json.dumps(body).encode())
        assert response.status_code == 400, shape
        assert response.json()["error"].startswith("invalid request: input 'x': shape exceeds")
        rows = _audit_rows(env.config.server.state, response.headers["x-request-id"])
        assert rows == [("affine", "denied:malformed", 400)]


def test_f3_a_request_that_reaches_a_lane_is_audited_started_then_finished(env: Env) -> None:
    """F3/F6: the 'started' row is written before the worker runs, the outcome row after."""
    response = _post(env, json.dumps(BODY).encode())
    assert response.status_code == 200
    rows = _audit_rows(env.config.server.state, response.headers["x-request-id"])
    assert rows == [("affine", "started", 0), ("affine", "allowed", 200)]


def test_f3_a_request_cut_off_by_shutdown_still_ends_with_an_audit_row(make_gateway: Any) -> None:
    """F3: a request still in its worker when the grace period of a shutdown ends is recorded.

    16384 x 1024 rows through 120 matmuls: far longer than the 5 s grace on any machine (1024 rows
    finished inside it on a quiet one)."""
    slow = '\n[models.slow]\npath = "slow.onnx"\nruntime = "onnx"\ntenants = ["acme"]\n'
    gateway = make_gateway(server="request_timeout_seconds = 60\n", models=slow)
    lane = gateway.running.gateway.state.lanes[("acme", "slow")]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
                       {"name": "shape", "datatype": "INT64", "shape": [2], "data": [16384, 1024]}]}  # fmt: skip

    def call() -> None:
        with contextlib.suppress(httpx.HTTPError), gateway.client("acme") as client:
            client.post("/v2/models/slow/infer", json=body)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 10
    while lane.dispatched == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    stop, gateway.stop = gateway.stop, lambda: None  # stopped here, not again by the fixture
    stop()  # uvicorn waits 5 s, then cancels what still runs
    thread.join(30)
    db = sqlite3.connect(gateway.config.server.state)
    rows = db.execute("SELECT decision, status FROM audit WHERE model = 'slow' ORDER BY seq").fetchall()
    db.close()
    assert rows == [("started", 0), ("failed:cancelled", 499)]


# F4 -------------------------------------------------------------------------------------------


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_f4_slow_headers_time_out_and_connections_are_capped(make_gateway: Any) -> None:
    """F4: slowloris connections were never closed, and nothing capped open connections."""
    gateway = make_gateway(
        server="header_timeout_seconds = 2.5\nmax_connections = 12\nmax_connections_per_address = 8\n"
    )
    health = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    slow = []
    for _ in range(8):  # 8 connections from 127.0.0.1, each stuck in its header block
        sock = socket.create_connection(("127.0.0.1", gateway.port), source_address=("127.0.0.1", 0))
        sock.sendall(b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\n")
        slow.append(sock)
    time.sleep(0.2)
    # a ninth complete request from the same address: closed unanswered (per-address cap) ...
    assert _raw(gateway.port, health, timeout=3) == b""
    # ... while another address is served
    assert _raw(gateway.port, health, source="127.0.0.2").startswith(b"HTTP/1.1 200")
    for last in range(2, 6):  # 8 + 4 = 12 = the global cap
        sock = socket.create_connection(("127.0.0.1", gateway.port), source_address=(f"127.0.0.{last}", 0))
        slow.append(sock)
    time.sleep(0.2)
    assert gateway.running.gateway.state.guard.total == 12
    # at the global cap a newcomer takes the place of the connection stuck longest (review 3):
    # strangers holding the cap can no longer lock everyone out
    assert _raw(gateway.port, health, source="127.0.0.6", timeout=3).startswith(b"HTTP/1.1 200")
    assert _closed_by_server(slow[0], 3.0)
    # the header deadline closes every other stuck connection; then the server answers again
    assert all(_closed_by_server(sock, 8.0) for sock in slow[1:])
    for sock in slow:
        sock.close()
    time.sleep(0.2)
    assert _raw(gateway.port, health).startswith(b"HTTP/1.1 200")
    text = gateway.metrics()
    assert 'airlock_preauth_refused_total{reason="header_timeout"} 11.0' in text
    assert 'airlock_preauth_refused_total{reason="evicted_waiting"} 1.0' in text
    assert 'airlock_preauth_refused_total{reason="address_connections"} 1.0' in text
    assert 'airlock_preauth_refused_total{reason="connections"} 0.0' in text


def test_f1_the_request_bucket_throttles_a_single_address_before_authentication(make_gateway: Any) -> None:
    """F1: the per-address request bucket (every request, keyed or not) answers 429 once empty."""
    gateway = make_gateway(server="preauth_requests_per_second = 5\npreauth_burst = 10\n")
    with gateway.client("acme") as client:
        statuses = [client.post("/v2/models/affine/infer", json=BODY).status_code for _ in range(30)]
    assert 10 <= statuses.count(200) <= 14 and statuses.count(429) == 30 - statuses.count(200)
    assert statuses[:10] == [200] * 10
    assert 'airlock_preauth_refused_total{reason="rate"}' in gateway.metrics()


def test_f4_a_tls_handshake_that_never_comes_is_cut_off(make_gateway: Any, tmp_path: Path) -> None:
    """F4 with TLS: connections are seen by the guard only after the handshake, which asyncio lets
    take 60 s; the gateway gives it header_timeout_seconds."""
    certs = tmp_path / "certs"
    assert main(["certs", "dev", "--out", str(certs), "--host", "127.0.0.1"]) == 0
    tls = f'\n[tls]\ncert = "{certs / "server.pem"}"\nkey = "{certs / "server.key"}"\n'
    gateway = make_gateway(server="header_timeout_seconds = 1.0\n", extra=tls)
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        assert _closed_by_server(sock, 5.0)  # no ClientHello ever sent


def test_f4_a_second_slow_request_on_a_kept_alive_connection_times_out_too(make_gateway: Any) -> None:
    """F4: the header deadline applies to every request on a connection, not only the first."""
    gateway = make_gateway(server="header_timeout_seconds = 1.0\nkeep_alive_seconds = 30\n")
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        answer = b""
        while not answer.endswith(b'{"live":true}'):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")  # ... and the rest never comes
        assert _closed_by_server(sock, 5.0)


def test_f4_a_client_that_never_reads_its_reply_is_cut_off(make_gateway: Any) -> None:
    """F4, the other end: a reply that backs up (the client stops reading) held its buffer and the
    connection forever; now the connection is aborted after send_timeout_seconds."""
    gateway = make_gateway(
        server="send_timeout_seconds = 1.0\nmax_body_bytes = 8388608\nrequest_timeout_seconds = 30\n"
    )
    x = np.ones((440000, 4), dtype=np.float32)  # 7 MB in, 5.3 MB back: more than the kernel buffers
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [440000, 4],
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()  # fmt: skip
    body = header + x.tobytes()
    request = (
        b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {gateway.tokens['acme']}\r\nContent-Length: {len(body)}\r\n".encode()
        + f"Inference-Header-Content-Length: {len(header)}\r\n\r\n".encode()
    )  # fmt: skip
    guard = gateway.running.gateway.state.guard
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(("127.0.0.1", gateway.port))
        sock.sendall(request + body)  # ... and never read
        deadline = time.monotonic() + 20
        while guard.refused["send_timeout"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert guard.refused["send_timeout"] == 1
        assert guard.total == 0
    finally:
        sock.close()


def test_f4_a_refusal_before_the_body_is_read_closes_the_connection(env: Env) -> None:
    """F4: after a 401 the server kept reading and dropping the unread body for as long as the
    client trickled it, with no deadline; such replies now close the connection."""
    port = int(env.url.rsplit(":", 1)[1])
    key = f"Bearer {_token(env)}".encode()
    for auth, model, status in (
        (b"Bearer nonsense", b"affine", b"401"),
        (key, b"no-such", b"404"),
        (key, b"affine", b"504"),
    ):  # the last one: the body never completes within the request deadline
        path = b"/v2/models/" + model + b"/infer"
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth
                         + b"\r\nContent-Length: 60000\r\n\r\n" + b" " * 100)  # fmt: skip
            sock.settimeout(5)
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    answer += chunk
        assert answer.split(b" ")[1] == status and b"connection: close" in answer.lower()


# F5 -------------------------------------------------------------------------------------------


def test_f5_an_idle_worker_that_dies_is_noticed_and_readiness_tells_the_truth(make_gateway: Any) -> None:
    """F5: a killed idle worker went unnoticed: ready stayed true and the next request got a 503."""
    gateway = make_gateway()
    lane = gateway.running.gateway.state.lanes[("acme", "affine")]
    (before,) = lane.pids()
    with _replacement_held_back(lane):
        os.killpg(before, signal.SIGKILL)
        assert _readiness_once_dropped(gateway.url, 10) == 503
        with gateway.client("acme") as client:
            assert client.get("/v2/models/affine/ready").json() == {"name": "affine", "ready": False}
    (after,) = _restarted(lane)  # with no request asking for it
    assert after != before
    _serves_again(gateway)


@contextlib.contextmanager
def _replacement_held_back(lane: Any) -> Iterator[None]:
    """The lane's worker file is out of place while the block runs: no replacement can start."""
    staged = Path(lane._factory.args[0])
    hidden = staged.with_name(staged.name + ".hidden")
    staged.rename(hidden)
    try:
        yield
    finally:
        hidden.rename(staged)


def _readiness_once_dropped(url: str, seconds: float) -> int:
    """/v2/health/ready's status once it is no longer 200, or 200 after ``seconds``."""
    deadline = time.monotonic() + seconds
    ready = 200
    while ready == 200 and time.monotonic() < deadline:
        ready = httpx.get(f"{url}/v2/health/ready", timeout=5).status_code
        time.sleep(0.05)
    return ready


def _restarted(lane: Any) -> list[int]:
    deadline = time.monotonic() + 30
    while not lane.pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(lane.pids())


def _serves_again(gateway: Any) -> None:
    assert httpx.get(f"{gateway.url}/v2/health/ready", timeout=5).status_code == 200
    with gateway.client("acme") as client:
        assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200


def _sandbox_tree(outer: int) -> list[int]:
    """``outer``'s descendants, nearest first (from /proc): bwrap -> zygote -> job."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text(encoding="ascii", errors="replace")
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [outer]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.parametrize("depth", ["job", "zygote"])
def test_f5_a_process_dying_anywhere_inside_an_idle_sandbox_drops_readiness(
    make_gateway: Any, depth: str
) -> None:
    """F5 at any depth: SIGKILL to the job that holds the model (the OOM killer's pick) or to the
    zygote between it and bubblewrap, while the worker is idle and the launcher lives on. The death
    is noticed with no request asking (readiness drops while the replacement cannot start), then
    the worker is replaced and serves. Before the fix, only the outer process was watched: readiness
    stayed 200 and the next request got a 503."""
    gateway = make_gateway()
    lane = gateway.running.gateway.state.lanes[("acme", "affine")]
    (before,) = lane.pids()
    tree = _sandbox_tree(before)
    assert len(tree) >= 2, tree  # zygote -> job (bwrap --as-pid-1: the zygote is the sandbox's pid 1)
    victim = tree[-1] if depth == "job" else tree[-2]
    with _replacement_held_back(lane):
        os.kill(victim, signal.SIGKILL)
        assert _readiness_once_dropped(gateway.url, 15) == 503, f"the killed {depth} went unnoticed"
    after = _restarted(lane)
    assert after and after != [before]
    _serves_again(gateway)


# F6 -------------------------------------------------------------------------------------------


def _worker_calls(admin: int) -> float:
    for line in httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text.splitlines():
        if line.startswith('airlock_worker_calls_total{model="affine",tenant="acme"}'):
            return float(line.split()[-1])
    raise AssertionError("no airlock_worker_calls_total for acme/affine")


def test_f6_a_full_disk_refuses_service_instead_of_serving_unaudited(tmp_path: Path) -> None:
    """F6: with the state file unwritable the model still ran and the call went unaudited (500).

    The full disk is simulated with RLIMIT_FSIZE = 0 on the gateway process (set from outside with
    prlimit): every write(2) to a regular file then fails with EFBIG, which SQLite reports as a
    disk I/O error, the same path as ENOSPC (SQLITE_FULL). A tmpfs would need mount privileges
    and SQLite's max_page_count would only exercise SQLite's own check, not the OS refusing writes.
    """
    _models.affine(tmp_path / "affine.onnx")
    path = write_config(tmp_path, AFFINE)
    store = open_store(load_config(path))
    store.add_tenant("acme", None)
    store.add_tenant("globex", None)
    token = create_key(store, "acme")[1]
    store.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "airlock", "serve", "--config", str(path)],
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        for line in process.stderr:
            entry = json.loads(line)
            if entry["message"] == "listening":
                break
        url, admin = f"http://127.0.0.1:{entry['port']}", entry["admin_port"]
        headers = {"Authorization": f"Bearer {token}"}
        threading.Thread(target=lambda: [None for _ in process.stderr or ()], daemon=True).start()
        with httpx.Client(base_url=url, headers=headers, timeout=20) as client:
            assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
            calls = _worker_calls(admin)
            _, hard = resource.prlimit(process.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (0, hard))
            try:
                for _ in range(3):
                    refused = client.post("/v2/models/affine/infer", json=BODY)
                    assert refused.status_code == 503
                    assert refused.json() == {"error": "audit log unavailable; the request was not served"}
                assert _worker_calls(admin) == calls  # the model never ran
                assert client.get("/v2/health/ready").status_code == 503
            finally:
                resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (hard, hard))
            assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
            assert client.get("/v2/health/ready").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert main(["audit", "verify", "--config", str(path)]) == 0


# F7 -------------------------------------------------------------------------------------------


def test_f7_rows_cut_from_the_end_after_a_crash_are_detected_without_expect_head(
    make_gateway: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """F7: the head was only logged at clean shutdown, and verify passed a truncated chain."""
    gateway = make_gateway(extra="[audit]\nhead_interval_seconds = 0.1\n")
    with gateway.client("acme") as client:
        for _ in range(5):
            assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
    head_file = gateway.config.audit.head_file
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the periodic writer has caught up with the last row
        if head_file.exists() and json.loads(head_file.read_text())["seq"] == 10:
            break
        time.sleep(0.05)
    # "crash": the database as it was, minus its last rows (never a clean shutdown)
    copy = tmp_path / "crashed"
    copy.mkdir()
    source, target = sqlite3.connect(gateway.config.server.state), sqlite3.connect(copy / "state.db")
    source.backup(target)
    source.close()
    target.execute("DELETE FROM audit WHERE seq > 7")
    target.commit()
    target.close()
    (copy / "head.json").write_bytes(head_file.read_bytes())
    config = copy / "gateway.toml"
    config.write_text(
        f'[server]\nstate = "state.db"\n[audit]\nkey_file = "{gateway.config.audit.key_file}"\n'
        'head_file = "head.json"\n',
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "the chain ends at seq 7 but the head recorded at" in capsys.readouterr().out
    # deleting the head file as well does not make the shortened log pass
    config.write_text(config.read_text().replace("head.json", "gone.json"), encoding="utf-8")
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "no head file at" in capsys.readouterr().out
    config.write_text(config.read_text().replace("gone.json", "head.json"), encoding="utf-8")
    # re-chaining the shortened log without the key (plain SHA-256, the old scheme) does not help
    from airlock.gateway._audit import GENESIS

    db = sqlite3.connect(copy / "state.db")
    prev = GENESIS
    for seq, *fields in db.execute("SELECT seq, time, tenant, key_id, model, model_digest, request_id, "
                                    "decision, status FROM audit ORDER BY seq").fetchall():  # fmt: skip
        import hashlib

        body = json.dumps([seq, repr(fields[0]), *fields[1:]], separators=(",", ":"))
        row_hash = hashlib.sha256(prev.encode() + b"\n" + body.encode()).hexdigest()
        db.execute("UPDATE audit SET prev_hash = ?, row_hash = ? WHERE seq = ?", (prev, row_hash, seq))
        prev = row_hash
    db.commit()
    db.close()
    (copy / "head.json").unlink()  # and the head file removed as well
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "row seq 1: content does not match its MAC" in capsys.readouterr().out


# F8, F9 ---------------------------------------------------------------------------------------


def test_f8_duplicate_authorization_headers_are_a_400(env: Env) -> None:
    """F8: with two Authorization headers the first one won."""
    body = json.dumps(BODY).encode()
    request = (
        b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {_token(env)}\r\nAuthorization: Bearer nonsense\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )  # fmt: skip
    answer = _raw(int(env.url.rsplit(":", 1)[1]), request)
    assert answer.startswith(b"HTTP/1.1 400") and b"connection: close" in answer.lower()
    assert answer.endswith(b'{"error": "invalid request: ambiguous headers"}')


def test_f9_content_length_with_transfer_encoding_is_a_400_and_nothing_is_smuggled(env: Env) -> None:
    """F9: Content-Length + Transfer-Encoding: chunked was accepted (chunked won)."""
    smuggled = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (
        b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {_token(env)}\r\n".encode()
        + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
    )  # fmt: skip
    answer = _raw(int(env.url.rsplit(":", 1)[1]), request)
    assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1") == 1


# F10, F11 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "value"),
    [("FP32", "1e400"), ("FP64", "-1e400"), ("FP16", "1e309"), ("INT64", str(2**63)),
     ("INT64", str(2**64)), ("INT32", str(-(2**31) - 1)), ("UINT64", str(2**64)), ("INT64", "9" * 4000)],
    ids=["1e400", "-1e400", "fp16-1e309", "int64+1", "2**64", "int32-1", "uint64+1", "4000-digits"],
)  # fmt: skip
def test_f10_numbers_that_overflow_the_datatype_are_a_400(env: Env, datatype: str, value: str) -> None:
    """F10: 1e400 parsed to inf and got past the NaN/Infinity ban."""
    data = ", ".join([value] + ["1"] * 3)
    spec = f'{{"name": "x", "datatype": "{datatype}", "shape": [1, 4], "data": [{data}]}}'
    response = _post(env, ('{"inputs": [' + spec + "]}").encode())
    assert response.status_code == 400
    assert f"out of range for {datatype}" in response.json()["error"]


def test_f10_the_largest_values_that_fit_are_accepted() -> None:
    from airlock.gateway._tensors import parse_infer_request

    for datatype, value in (("INT64", str(2**63 - 1)), ("UINT64", str(2**64 - 1)), ("FP64", "1.7e308")):
        body = f'{{"inputs": [{{"name": "x", "datatype": "{datatype}", "shape": [1], "data": [{value}]}}]}}'
        assert parse_infer_request(body.encode(), ()).inputs["x"].tolist() == [json.loads(value)]


@pytest.mark.parametrize(
    "body",
    [b"[" * 60000, b'{"inputs": [' + b"1" * 5000 + b"]}", b'{"a": 1, "a": 2}', b"\xff\xfe",
     b'{"inputs": [], "' + b"k" * 3000 + b'": 1}',
     b'{"inputs": [{"name": "x", "datatype": "' + b"D" * 3000 + b'", "shape": [1], "data": [1]}]}'],
    ids=["deep-nesting", "5000-digit-int", "duplicate-key", "not-utf8", "long-unknown-key", "long-datatype"],
)  # fmt: skip
def test_f11_error_texts_are_fixed_phrases(env: Env, body: bytes) -> None:
    """F11: 400s quoted Python internals (RecursionError, sys.set_int_max_str_digits) and echoed input."""
    response = _post(env, body)
    assert response.status_code == 400
    text = response.json()["error"]
    assert text.startswith("invalid request: ") and len(text) < 200
    for leak in ("Error", "sys.", "digits", "recursion", "kkkk", "DDDD", "line ", "char "):
        assert leak not in text


# throughput and the binary extension -----------------------------------------------------------


def test_workers_of_one_lane_serve_requests_concurrently(make_gateway: Any) -> None:
    """workers = 2 must parallelise: a quick request is served while a long one holds a worker."""
    slow = '\n[models.slow]\npath = "slow.onnx"\nruntime = "onnx"\ntenants = ["acme"]\nworkers = 2\n'
    gateway = make_gateway(server="request_timeout_seconds = 60\n", models=slow)
    lane = gateway.running.gateway.state.lanes[("acme", "slow")]
    assert len(lane.pids()) == 2

    def body(rows: int) -> dict[str, Any]:
        return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
                           {"name": "shape", "datatype": "INT64", "shape": [2], "data": [rows, 1024]}]}  # fmt: skip

    result: dict[str, int] = {}

    def long_call() -> None:
        with gateway.client("acme") as client:
            result["long"] = client.post("/v2/models/slow/infer", json=body(512)).status_code

    thread = threading.Thread(target=long_call)
    thread.start()
    deadline = time.monotonic() + 10
    while lane.dispatched == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    with gateway.client("acme") as client:
        assert client.post("/v2/models/slow/infer", json=body(1)).status_code == 200
    assert thread.is_alive()  # the long one still runs on the other worker
    thread.join(60)
    assert result["long"] == 200


def _binary(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(header).encode()
    return raw + b"".join(chunks), {"Inference-Header-Content-Length": str(len(raw))}


def test_binary_tensor_extension_round_trip(env: Env) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    header: dict[str, Any] = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4],
                          "parameters": {"binary_data_size": x.nbytes}}],
              "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}  # fmt: skip
    body, headers = _binary(header, x.tobytes())
    with httpx.Client(base_url=env.url, headers={"Authorization": f"Bearer {_token(env)}"}) as client:
        response = client.post("/v2/models/affine/infer", content=body, headers=headers)
        assert response.status_code == 200, response.text
        length = int(response.headers["inference-header-content-length"])
        reply = json.loads(response.content[:length])
        (output,) = reply["outputs"]
        assert output["shape"] == [2, 3] and output["parameters"] == {"binary_data_size": 24}
        y = np.frombuffer(response.content[length:], dtype="<f4").reshape(2, 3)
        np.testing.assert_allclose(y, x @ _models.AFFINE_W + _models.AFFINE_B, rtol=1e-6)
        # sizes at N-1, N+1 and a trailing byte are refused
        for size, extra in ((x.nbytes - 1, b""), (x.nbytes + 1, b""), (x.nbytes, b"\0")):
            header["inputs"][0]["parameters"] = {"binary_data_size": size}
            body, headers = _binary(header, x.tobytes() + extra)
            response = client.post("/v2/models/affine/infer", content=body, headers=headers)
            assert response.status_code == 400, (size, extra)
        nan = np.full((1, 4), np.nan, dtype=np.float32)
        header["inputs"][0] |= {"shape": [1, 4], "parameters": {"binary_data_size": 16}}
        body, headers = _binary(header, nan.tobytes())
        assert client.post("/v2/models/affine/infer", content=body, headers=headers).status_code == 400
        for bad in (b"-5", b"\xb2", b"1e3", b"0"):  # "\xb2" is a Latin-1 digit that int() refuses
            response = client.post(
                "/v2/models/affine/infer", content=body, headers={b"Inference-Header-Content-Length": bad}
            )
            assert response.status_code == 400, bad


def test_large_replies_are_streamed_intact_in_both_encodings(make_gateway: Any) -> None:
    """1.4 MB of binary input; the 1 MB reply comes back binary (streamed from the output buffer) and
    as JSON (encoded in the tenant's codec process, then streamed)."""
    gateway = make_gateway(server="max_body_bytes = 4194304\nrequest_timeout_seconds = 30\n")
    x = (np.arange(90000 * 4, dtype=np.float32) % 97).reshape(90000, 4)
    expected = x @ _models.AFFINE_W + _models.AFFINE_B
    inputs = [
        {"name": "x", "datatype": "FP32", "shape": [90000, 4], "parameters": {"binary_data_size": x.nbytes}}
    ]
    with gateway.client("acme") as client:
        body, headers = _binary({"inputs": inputs, "parameters": {"binary_data_output": True}}, x.tobytes())
        response = client.post("/v2/models/affine/infer", content=body, headers=headers)
        assert response.status_code == 200 and int(response.headers["content-length"]) == len(
            response.content
        )
        length = int(response.headers["inference-header-content-length"])
        y = np.frombuffer(response.content[length:], dtype="<f4").reshape(90000, 3)
        np.testing.assert_allclose(y, expected, rtol=1e-6)
        body, headers = _binary({"inputs": inputs}, x.tobytes())
        response = client.post("/v2/models/affine/infer", content=body, headers=headers)
        assert response.status_code == 200 and len(response.content) > 1024 * 1024
        (output,) = response.json()["outputs"]
        np.testing.assert_allclose(np.array(output["data"]).reshape(90000, 3), expected, rtol=1e-6)
    assert gateway.running.gateway.state.codecs.pids("acme")  # the JSON reply was encoded off the loop
