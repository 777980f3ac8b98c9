"""A real gateway HTTP surface for fast unit tests: :func:`build_app` (the pre-auth guard and the
KServe routes) served by uvicorn with the guarded h11 protocol on a real 127.0.0.1 socket, on an
event loop thread of its own, with a real SQLite store, real keys, a real limiter and real lanes.

What it leaves out is the sandbox: each lane's workers are :class:`Backend` objects (the
``WorkerBackend`` protocol) that compute a fixed function of their input in this process, so a test
can make a worker answer, fail, crash or hang on demand in microseconds. The sandboxed workers
themselves are tested in tests/sandbox and, behind the gateway, in tests/gateway.

The control value is the first element of input ``x`` (``FP32 [-1, 4]``):

* anything else: ``y = 2 * x + 1`` (FP32, same shape) and ``s = sum(x, axis=1)`` (FP32)
* ``13``: the model raises (a ``ModelError`` whose text must never reach the caller)
* ``66``: the worker breaks (an ``AirlockError``: the lane replaces it)
* ``99``: the worker hangs for ``HANG_SECONDS`` (past the request deadline)
* ``7``: one output ``big`` = ``arange(x[0, 1])`` as FP32 (a reply of any size)
* ``5``: one complex output (no KServe datatype: the reply cannot be encoded)
* ``3``: outputs ``y`` only (a requested output ``s`` is then missing)
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn

from airlock.errors import AirlockError, ModelError
from airlock.gateway._app import GatewayState, build_app
from airlock.gateway._audit_writer import AuditWriter
from airlock.gateway._config import (
    AuditConfig,
    GatewayConfig,
    ModelConfig,
    ServerConfig,
    TenantLimits,
    TensorSpec,
)
from airlock.gateway._guard import ConnectionGuard, guarded_protocol
from airlock.gateway._keys import create_key
from airlock.gateway._memory_limiter import MemoryLimiter
from airlock.gateway._observe import Metrics
from airlock.gateway._sqlite_store import SqliteStore
from airlock.gateway._store import AdmissionRecord, AuditRow
from airlock.gateway._workers import Lane, WorkerBackend
from airlock.sandbox import SandboxLimits

HANG_SECONDS = 0.5
DIGEST = "sha256:" + "ab" * 32
LIMITED = TenantLimits(requests_per_minute=3, tensor_bytes_per_minute=64, max_concurrent=1)


class Backend:
    """A worker that computes in this process (see the module docstring)."""

    def __init__(self) -> None:
        self.dead = False
        self.started = 0
        #: inputs this worker was handed
        self.calls = 0
        #: requests sent and not yet received
        self.pending: collections.deque[Any] = collections.deque()

    def start(self) -> None:
        self.started += 1

    def infer(self, inputs: Any) -> dict[str, np.ndarray[Any, Any]]:
        if self.dead:
            raise AirlockError("worker is not running")
        self.calls += 1
        x = np.asarray(inputs["x"])
        first = float(x.reshape(-1)[0]) if x.size else 0.0
        if first == 13:
            raise ModelError("Traceback: secret /etc/passwd from the model")
        if first == 66:
            raise AirlockError("the worker broke its protocol: " + "x" * 600)
        if first == 99:
            time.sleep(HANG_SECONDS)
        if first == 7:
            return {"big": np.arange(int(x.reshape(-1)[1]), dtype=np.float32)}
        if first == 5:
            return {"c": np.ones(2, dtype=np.complex64)}
        y = (x * 2 + 1).astype(np.float32)
        if first == 3:
            return {"y": y}
        return {"y": y, "s": x.sum(axis=1).astype(np.float32)}

    def send(self, inputs: Any) -> None:
        """Queue a request: answered in order by :meth:`receive` (the lanes send ahead)."""
        if self.dead:
            raise AirlockError("worker is not running")
        self.pending.append(inputs)

    def receive(self) -> dict[str, np.ndarray[Any, Any]]:
        return self.infer(self.pending.popleft())

    def alive(self) -> bool:
        return not self.dead

    def exit_fd(self) -> int | None:
        return None

    def kill(self) -> None:
        self.dead = True

    @property
    def pid(self) -> int | None:
        return None


def _model(
    name: str, tenants: tuple[str, ...], inputs: tuple[TensorSpec, ...] = (), runtime: str | None = "onnx"
) -> ModelConfig:
    return ModelConfig(
        name,
        Path(f"/nonexistent/{name}.onnx"),
        runtime,
        None,
        None,
        None,
        None,
        frozenset(),
        tenants,
        1,
        inputs,
    )


X = (TensorSpec("x", "FP32", (-1, 4)),)
MODELS = (
    _model("affine", ("acme", "globex", "limited"), X),
    _model("private", ("globex",), X),
    # configured for acme but never admitted: as invisible as a model that does not exist
    _model("unadmitted", ("acme",), X),
    # served with no declared inputs (any input names, types and shapes)
    _model("free", ("acme",), runtime=None),
)


def admission(name: str) -> AdmissionRecord:
    return AdmissionRecord(name, f"{name}.onnx", DIGEST, "none configured", "CLEAN", "admitted", "", (), 1.0)


@dataclass
class Served:
    """The running server: ``url``, tokens by name, and the state each test may adjust."""

    url: str
    port: int
    state: GatewayState
    config: GatewayConfig
    tokens: dict[str, str]
    key_ids: dict[str, str]
    lanes: dict[tuple[str, str], Lane]
    store: SqliteStore
    loop: asyncio.AbstractEventLoop
    backends: list[Backend] = field(default_factory=list)
    #: what the server serves; rebuilt by :meth:`reset` (so each test runs build_app itself)
    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def reset(self) -> None:
        """Fresh budgets, metrics and configuration for the next test (the store and keys stay)."""
        self.state.config = self.config
        self.state.limiter = MemoryLimiter()
        self.state.metrics = Metrics()
        self.state.lanes = dict(self.lanes)
        self.state.text_lanes = {}
        self.state.audit_ok = True
        self.state.store = self.store
        self.state.audit = AuditWriter(self.store)  # group commits, as the gateway writes them
        self.app = build_app(self.state)  # a fresh pre-auth guard too

    def serve(self, **server: Any) -> None:
        """Change ``[server]`` settings for this test (read by the app on every request)."""
        self.state.config = replace(self.config, server=replace(self.config.server, **server))

    def rows(self, request_id: str) -> list[AuditRow]:
        assert isinstance(self.state.store, SqliteStore)
        return [r for r in self.state.store.audit_rows() if r.request_id == request_id]

    def codec_jobs(self, tenant: str) -> int:
        """Jobs handed to ``tenant``'s codec process so far (0 when it has none)."""
        pool = self.state.codecs._pools.get(tenant)
        return 0 if pool is None else int(pool._queue_count)

    def metric(self, name: str, **labels: str) -> float:
        value = self.state.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def calls(self) -> int:
        """Inputs handed to workers so far (all lanes)."""
        return sum(b.calls for b in self.backends)

    def asgi(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        path: str = "/v2/models/affine/infer",
        **extra: Any,
    ) -> tuple[int, bytes]:
        """Call the ASGI application directly (on the server's loop) with headers no HTTP parser
        in front of it would let through: (status, body). ``extra`` goes into the scope."""
        sent = self.asgi_later(headers, body, path, **extra).result(10)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    def asgi_later(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        path: str = "/v2/models/affine/infer",
        **extra: Any,
    ) -> concurrent.futures.Future[list[dict[str, Any]]]:
        """:meth:`asgi` as a future of the messages sent (cancel it to cancel the request)."""
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"x"), *headers], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", self.port),
            **extra,
        }  # fmt: skip
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def run() -> list[dict[str, Any]]:
            await self.app(scope, receive, send)
            return sent

        return asyncio.run_coroutine_threadsafe(run(), self.loop)


def _own_forkserver() -> None:
    """The codecs run in processes from multiprocessing's fork server, a per-process singleton. A
    process forked from one that started it (mutmut runs each mutant in a fork) inherits the
    singleton but cannot wait for that server (ChildProcessError when a codec starts): forget it
    there, so a fork server of its own is started."""
    server: Any = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is None:
        return
    try:
        os.waitpid(server._forkserver_pid, os.WNOHANG)
    except ChildProcessError:
        with contextlib.suppress(OSError):
            os.close(server._forkserver_alive_fd)
        server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None


def start(folder: Path) -> tuple[Served, Callable[[], None]]:
    _own_forkserver()
    server = ServerConfig(
        port=0, admin_port=0, max_body_bytes=4096, request_timeout_seconds=20.0, state=folder / "state.db",
        preauth_burst=100000, preauth_failure_burst=100000, preauth_requests_per_second=100000.0,
        preauth_failures_per_second=100000.0, offload_bytes=1 << 20,
    )  # fmt: skip
    config = GatewayConfig(
        folder / "gateway.toml",
        server,
        None,
        AuditConfig(folder / "audit.key", folder / "audit.head"),
        TenantLimits(requests_per_minute=6000, tensor_bytes_per_minute=1 << 30, max_concurrent=8),
        SandboxLimits(),
        MODELS,
    )
    store = SqliteStore(server.state, audit_key=b"k" * 32)
    tokens, key_ids = {}, {}
    for tenant, limits in (("acme", None), ("globex", None), ("limited", LIMITED), ("nobody", None)):
        store.add_tenant(tenant, limits)
        record, tokens[tenant] = create_key(store, tenant)
        key_ids[tenant] = record.key_id
    record, tokens["acme-free-only"] = create_key(store, "acme", ("free",))
    key_ids["acme-free-only"] = record.key_id
    record, tokens["acme-affine-only"] = create_key(store, "acme", ("affine",))
    key_ids["acme-affine-only"] = record.key_id
    admissions = {m.name: admission(m.name) for m in MODELS if m.name != "unadmitted"}
    state = GatewayState(config, store, MemoryLimiter(), Metrics(), admissions)
    backends: list[Backend] = []

    def factory() -> WorkerBackend:
        backend = Backend()
        backends.append(backend)
        return backend

    for model in MODELS:
        if model.name in admissions:
            for tenant in model.tenants:
                state.lanes[(tenant, model.name)] = Lane(tenant, model.name, DIGEST, factory, 1)
    guard = ConnectionGuard(server)
    state.guard = guard
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="unit-gateway", daemon=True)
    thread.start()
    holder: list[Served] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await holder[0](scope, receive, send)

    uv = uvicorn.Server(
        uvicorn.Config(
            app, http=guarded_protocol(guard), lifespan="off", log_config=None,
            access_log=False, server_header=False, date_header=False, ws="none",
        )
    )  # fmt: skip

    tasks: list[asyncio.Task[None]] = []

    async def begin() -> None:
        await asyncio.gather(*(lane.start() for lane in state.lanes.values()))
        tasks.append(loop.create_task(uv.serve(sockets=[sock])))
        while not uv.started:
            await asyncio.sleep(0.01)

    asyncio.run_coroutine_threadsafe(begin(), loop).result(30)
    served = Served(
        f"http://127.0.0.1:{port}",
        port,
        state,
        config,
        tokens,
        key_ids,
        dict(state.lanes),
        store,
        loop,
        backends,
    )
    served.reset()
    holder.append(served)

    def stop() -> None:
        async def end() -> None:
            uv.should_exit = True
            for lane in served.lanes.values():
                await lane.close()
            state.codecs.close()

        asyncio.run_coroutine_threadsafe(end(), loop).result(30)
        time.sleep(0.2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        store.close()
        sock.close()
        # reap the killed codec processes and stop multiprocessing's fork server: a process forked
        # from this one later (mutmut runs each mutant in a fork) must not inherit children it
        # cannot wait for
        deadline = time.monotonic() + 10
        while multiprocessing.active_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]

    return served, stop
