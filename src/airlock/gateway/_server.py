"""Running the gateway: admission, workers, sockets, and two uvicorn servers (API and loopback admin).

Start-up fails closed: an unreadable config or TLS file, a model refused at admission, a worker that
does not start, or a plaintext listener on a non-loopback address (without ``unsafe_plaintext``)
each stop the gateway with a :class:`UsageError` before any socket accepts a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from airlock._net import is_loopback
from airlock.errors import UsageError
from airlock.gateway._admission import admit
from airlock.gateway._app import CLIENT_CN_KEY, GatewayState, build_app
from airlock.gateway._audit import AuditHead, advance, carries_mac, load_key, read_head, write_head
from airlock.gateway._audit_writer import AuditWriter
from airlock.gateway._config import GatewayConfig, ModelConfig, TlsConfig
from airlock.gateway._guard import (
    ADMIN_CONNECTIONS,
    ConnectionGuard,
    GuardedServer,
    connection_cap,
    guarded_protocol,
    raise_fd_limit,
)
from airlock.gateway._observe import Metrics
from airlock.gateway._open import migrate_state, open_limiter, open_store
from airlock.gateway._store import AdmissionRecord, Store
from airlock.gateway._text_guard import warm_guards
from airlock.gateway._text_lane import KILL_AFTER, TextLane
from airlock.gateway._tls import client_common_name, server_context
from airlock.gateway._workers import Lane, SandboxWorker
from airlock.sandbox import SandboxPolicy
from airlock.sandbox._detect import detect_runtime

__all__ = ["Gateway", "admit_models", "is_loopback", "migrate_state", "open_limiter", "open_store"]

_log = logging.getLogger("airlock.gateway")
#: the runtime of models served on the OpenAI-compatible endpoints
TEXT_RUNTIME = "text-gguf"
#: seconds the shutdown waits for the requests it cancelled to unwind (and, more, for their rows)
_DRAIN_SECONDS = 5.0
#: seconds the shutdown waits for the audit rows still queued (one commit's busy timeout and more)
_FLUSH_SECONDS: Final = 15.0
#: while serving, the embedded store's reads (on the event loop) wait at most this for a lock
_READ_WAIT_SECONDS: Final = 0.2


class _CertAwareH11(H11Protocol):
    """h11 protocol that puts the verified client certificate's CN into each request's scope state."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            common_name = client_common_name(ssl_object.getpeercert())
            # per-connection copy: uvicorn copies app_state into every request's scope["state"]
            self.app_state = {**self.app_state, CLIENT_CN_KEY: common_name}


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"server: cannot resolve listen address {host!r}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then (without it,
    # Nagle's algorithm plus delayed ACKs add ~40 ms to every response)
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"server: cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def admit_models(
    config: GatewayConfig, store: Store
) -> list[tuple[ModelConfig, AdmissionRecord, Path | None]]:
    """Admit every configured model (store each record); the caller decides what a refusal means."""
    staging = config.server.state.with_name(config.server.state.name + ".models")
    results = []
    for model in config.models:
        record, staged = admit(model, staging)
        store.put_admission(record)
        level = logging.INFO if staged is not None else logging.ERROR
        _log.log(level, "admission", extra={"model": model.name, "decision": record.decision, "reason": record.reason,
                                            "verdict": record.verdict, "digest": record.digest})  # fmt: skip
        results.append((model, record, staged))
    return results


@dataclass(frozen=True)
class _Bound:
    api: socket.socket
    admin: socket.socket


class Gateway:
    """One gateway process. ``await start()`` then ``await wait()`` (or ``await stop()``)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        tls: TlsConfig | None = None,
        unsafe_plaintext: bool = False,
        policy: SandboxPolicy | None = None,
    ) -> None:
        self.config = replace(config, tls=tls) if tls is not None else config
        self.unsafe_plaintext = unsafe_plaintext
        self.policy = policy or SandboxPolicy(limits=config.sandbox)
        host = self.config.server.host
        if self.config.tls is None and not is_loopback(host):
            if not unsafe_plaintext:
                raise UsageError(
                    f"server: refusing to serve plaintext HTTP on non-loopback address {host!r}: "
                    "configure [tls] (or --tls-cert/--tls-key), or pass --unsafe-plaintext"
                )
            _log.warning(
                "UNSAFE: plaintext HTTP on a non-loopback address",
                extra={"host": host, "unsafe": "plaintext"},
            )
        self._ssl: ssl.SSLContext | None = server_context(self.config.tls) if self.config.tls else None
        self.state: GatewayState | None = None
        self._servers: list[uvicorn.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._bound: _Bound | None = None
        self._key: bytes | None = None
        self._head_task: asyncio.Task[None] | None = None
        #: the recorded head (the anchor: moved only forward along its own chain, see :func:`advance`)
        self._written: AuditHead | None = None
        self._head_lock = threading.Lock()

    @property
    def port(self) -> int:
        assert self._bound is not None
        return int(self._bound.api.getsockname()[1])

    @property
    def admin_port(self) -> int:
        assert self._bound is not None
        return int(self._bound.admin.getsockname()[1])

    def _ssl_factory(self, _config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        assert self._ssl is not None
        return self._ssl

    def _factory(self, staged: Path, model: ModelConfig) -> SandboxWorker:
        # a lane's GPU comes from its model's config only (one lane per GPU), never from the base policy
        policy = self.policy if self.policy.gpu == model.gpu else replace(self.policy, gpu=model.gpu)
        return SandboxWorker(staged, model.runtime, policy, model.definition)

    async def start(self, *, store: Store | None = None) -> None:
        config = self.config
        self._key = load_key(config.audit.key_file, create=True)
        store = store or open_store(config, audit_key=self._key)
        missing = sorted({t for m in config.models for t in m.tenants if store.tenant(t) is None})
        if missing:
            store.close()
            raise UsageError(
                f"config names unknown tenant(s) {', '.join(missing)}; add them with: airlock tenant add"
            )
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(None, admit_models, config, store)
        refused = [(m, r) for m, r, staged in results if staged is None]
        try:
            limiter = open_limiter(config) if not refused else None
        except BaseException:
            store.close()
            raise
        if refused:
            lines = []
            for model, record in refused:
                lines.append(f"  {model.name}: {record.reason}")
                lines.extend(f"    {f['severity']} {f['rule']}: {f['message']}" for f in record.findings[:20])
            store.close()
            raise UsageError(
                "admission refused model(s); remove them from the config or fix them:\n" + "\n".join(lines)
            )
        try:
            await loop.run_in_executor(None, _check_guards, [(m, s) for m, _, s in results if s is not None])
        except UsageError:
            _close(limiter)
            store.close()
            raise
        assert limiter is not None
        state = GatewayState(config, store, limiter, Metrics(), {m.name: r for m, r, _ in results})
        for model, record, staged in results:
            assert staged is not None
            text = _is_text(staged, model)
            for tenant in model.tenants:
                factory = functools.partial(self._factory, staged, model)
                if text:
                    state.text_lanes[(tenant, model.name)] = TextLane(
                        tenant, model.name, record.digest, factory, model.workers, model.context_length
                    )
                else:
                    state.lanes[(tenant, model.name)] = Lane(
                        tenant, model.name, record.digest, factory, model.workers
                    )
        lanes = len(state.lanes) + len(state.text_lanes)
        cap = connection_cap(config.server.max_connections, raise_fd_limit(), lanes)
        if cap < config.server.max_connections:
            _log.warning(
                "connection cap lowered to fit the file descriptor limit",
                extra={"max_connections": config.server.max_connections, "effective": cap},
            )
        for model, _, _ in results:
            if model.guard is not None:  # each tenant's codec builds the model's guards at start
                for tenant in model.tenants:
                    state.codecs.prepare(tenant, [(warm_guards, (model.name, model.guard))])
        state.guard = ConnectionGuard(config.server, cap)
        state.audit = AuditWriter(store)
        _export(state)
        self.state = state
        try:
            # the head is on disk before the first request: from then on a missing head file means
            # it was removed (with rows cut from the end?), never "not written yet"
            await loop.run_in_executor(None, self._first_head)
            bound_reads = getattr(store, "bound_reads", None)
            if bound_reads is not None:  # from now on its reads run on the event loop
                bound_reads(_READ_WAIT_SECONDS)
            await asyncio.gather(
                *(lane.start() for lane in state.lanes.values()),
                *(lane.start() for lane in state.text_lanes.values()),
                state.codecs.warm(),
            )
            self._bound = _Bound(
                _bind(config.server.host, config.server.port), _bind("127.0.0.1", config.server.admin_port)
            )
        except BaseException:
            await self._close_lanes()
            await state.audit.flush(_FLUSH_SECONDS)
            state.audit.close()
            state.codecs.close()
            store.close()
            _close(limiter)
            self.state = None
            raise
        api = uvicorn.Config(
            build_app(state), http=guarded_protocol(state.guard, _CertAwareH11), lifespan="off",
            log_config=None, access_log=False, server_header=False, date_header=False,
            proxy_headers=False, timeout_graceful_shutdown=5, ws="none", timeout_keep_alive=config.server.keep_alive_seconds,  # type: ignore[arg-type]
            ssl_context_factory=self._ssl_factory if self._ssl is not None else None,
        )  # fmt: skip
        # the admin port (loopback only) gets the same header and send deadlines and a small cap of
        # its own: its connections come out of the descriptor reserve that keeps accept() working
        admin_guard = ConnectionGuard(
            replace(
                config.server,
                max_connections=ADMIN_CONNECTIONS,
                max_connections_per_address=ADMIN_CONNECTIONS,
            ),
            ADMIN_CONNECTIONS,
        )
        state.admin_guard = admin_guard
        admin = uvicorn.Config(_admin_app(state), http=guarded_protocol(admin_guard), lifespan="off",
                               log_config=None, access_log=False, server_header=False, ws="none",
                               proxy_headers=False, timeout_keep_alive=config.server.keep_alive_seconds)  # type: ignore[arg-type]  # fmt: skip
        self._servers = [GuardedServer(api, config.server.header_timeout_seconds), uvicorn.Server(admin)]
        sockets = [self._bound.api, self._bound.admin]
        self._tasks = [
            loop.create_task(s.serve(sockets=[sock])) for s, sock in zip(self._servers, sockets, strict=True)
        ]
        while not all(s.started for s in self._servers):
            if any(t.done() for t in self._tasks):
                await self.stop()
                raise UsageError("server: the HTTP server failed to start")
            await asyncio.sleep(0.01)
        self._head_task = loop.create_task(self._heads())
        _log.info("listening", extra={"host": config.server.host, "port": self.port, "admin_port": self.admin_port,
                                      "tls": self._ssl is not None, "models": len(results), "lanes": lanes})  # fmt: skip

    async def wait(self) -> None:
        """Until either server stops (a signal, or :meth:`stop`); then stop everything."""
        if self._tasks:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        await self.stop()

    def request_stop(self) -> None:
        """Ask both servers to finish (call on the gateway's loop); :meth:`wait` then cleans up."""
        for server in self._servers:
            server.should_exit = True

    async def _drain(self) -> None:
        """After the servers stopped: let the requests they cancelled (past the graceful period)
        unwind, then finish the outcome rows those requests left to write (a text stream's row
        waits for its generation to stop, up to KILL_AFTER), so that every request that started
        ends with its row before the lanes and the store close. Bounded waits."""
        requests = {t for server in self._servers for t in getattr(server.server_state, "tasks", ())}
        if requests:
            await asyncio.wait(requests, timeout=_DRAIN_SECONDS)
        if self.state is not None and self.state.background:
            await asyncio.wait(set(self.state.background), timeout=KILL_AFTER + _DRAIN_SECONDS)

    async def _close_lanes(self) -> None:
        if self.state is not None:
            for lane in self.state.lanes.values():
                await lane.close()
            for text_lane in self.state.text_lanes.values():
                await text_lane.close()

    async def _heads(self) -> None:
        """Move the recorded head (head file and log) forward every ``head_interval_seconds``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.audit.head_interval_seconds)
            with contextlib.suppress(Exception):
                # in a thread: reading the new rows can wait for the store (a lock, the disk, a server)
                await loop.run_in_executor(None, self._write_head)

    def _first_head(self) -> None:
        """Before serving: the log must reach the recorded head and go on from it along its chain.

        A log that ends before the recorded head or no longer holds it (rows cut or replaced while
        the gateway was stopped or had crashed) refuses the start: a supervisor restarting the
        gateway at once must not turn the evidence into a clean head. Without a head file (a first
        start, a new replica of a shared store) the log's end is recorded as it is."""
        state, key = self.state, self._key
        assert state is not None and key is not None
        path = self.config.audit.head_file
        recorded = read_head(path, key)
        if recorded is None:
            head = state.store.audit_head()
            if head.seq:
                # a new replica of a shared store (or a gateway whose key file was replaced) must
                # hold the key the log was written with: with another one, every row it appends
                # breaks the one chain every replica shares (verify: "the row was edited")
                last = next(iter(state.store.audit_rows(head.seq)), None)
                if last is not None and not carries_mac(key, last):
                    raise UsageError(
                        f"audit: the log's last row (seq {head.seq}) does not carry this [audit] key_file's "
                        "MAC: the key differs from the one the log was written with (every replica needs "
                        "the same key file), or the row was edited; `airlock audit verify` tells which"
                    )
                _log.warning("audit: no head file; recording the log's end as it is",
                             extra={"seq": head.seq, "head_file": str(path)})  # fmt: skip
        else:
            head, problem = advance(state.store.audit_rows(max(recorded.seq, 1)), key, recorded)
            if problem is not None:
                _log.error("audit chain broken at the recorded head", extra={"problem": problem})
                raise UsageError(
                    f"audit: {problem}. The head file {path} is kept as the evidence; `airlock audit "
                    "verify` reports the break. To serve on the log as it is once the loss is accounted "
                    "for, move the head file aside and start again"
                )
        self._sync(state.store)
        try:
            write_head(path, key, head)
        except OSError as exc:
            raise UsageError(f"audit: cannot write the head file {path}: {exc.strerror}") from exc
        self._written = head
        _log.info("audit head", extra={"seq": head.seq, "audit_head": head.head})

    @staticmethod
    def _sync(store: Store) -> None:
        """Make the rows a head is about to name durable first (SQLite: checkpoint the WAL)."""
        sync = getattr(store, "sync_audit", None)
        if sync is not None:
            sync()

    def _write_head(self) -> str:
        """Record the log's end as the head (file, then log) if it lies on the recorded head's chain;
        otherwise keep the recorded head, log the break and report it (readiness). Returns the
        recorded head. Blocking: call it in a thread."""
        state, key = self.state, self._key
        if state is None or key is None:
            return ""
        with self._head_lock:
            anchor = self._written
            if anchor is None:
                return ""
            head, problem = advance(state.store.audit_rows(max(anchor.seq, 1)), key, anchor)
            if problem is not None:
                if state.audit_chain != problem:
                    _log.error("audit chain broken at the recorded head: the head is kept",
                               extra={"problem": problem, "seq": anchor.seq, "audit_head": anchor.head})  # fmt: skip
                state.audit_chain = problem
                return anchor.head
            if state.audit_chain is not None:
                _log.warning("audit chain reaches the recorded head again", extra={"seq": anchor.seq})
                state.audit_chain = None
            if head.seq == anchor.seq:
                return anchor.head
            try:
                self._sync(state.store)
                write_head(self.config.audit.head_file, key, head)
            except Exception as exc:  # the disk (head file) or the store (its sync)
                _log.error(
                    "audit head not written",
                    extra={"error": getattr(exc, "strerror", None) or type(exc).__name__},
                )
                return anchor.head
            self._written = head
            _log.info("audit head", extra={"seq": head.seq, "audit_head": head.head})
            return head.head

    async def stop(self) -> None:
        if self._head_task is not None:
            self._head_task.cancel()
            self._head_task = None
        for server in self._servers:
            server.should_exit = True
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        await self._drain()
        await self._close_lanes()
        if self._bound is not None:
            self._bound.api.close()
            self._bound.admin.close()
        if self.state is not None:
            self.state.codecs.close()
            if self.state.audit is not None:
                await self.state.audit.flush(_FLUSH_SECONDS)
                self.state.audit.close()
            head = ""
            with contextlib.suppress(Exception):
                head = await asyncio.get_running_loop().run_in_executor(None, self._write_head)
            recorded = self._written
            _log.info("stopped", extra={"seq": recorded.seq if recorded else 0, "audit_head": head})
            await asyncio.get_running_loop().run_in_executor(None, self.state.store.close)
            _close(self.state.limiter)
            self.state = None


def _close(limiter: object) -> None:
    close = getattr(limiter, "close", None)
    if close is not None:
        close()


def _export(state: GatewayState) -> None:
    """Counts kept by the guard, the pre-auth limiter and the lanes, read at scrape time."""
    guard = state.guard
    assert guard is not None

    def preauth() -> dict[tuple[str, ...], float]:
        counts: dict[tuple[str, ...], float] = {(k,): float(v) for k, v in guard.refused.items()}
        if state.preauth is not None:
            counts.update({(k,): float(v) for k, v in state.preauth.refused.items()})
        return counts

    state.metrics.watch(
        "airlock_preauth_refused",
        "Requests or connections refused before authentication",
        preauth,
        ("reason",),
    )
    state.metrics.watch(
        "airlock_connections", "Open API connections", lambda: {(): float(guard.total)}, (), gauge=True
    )
    state.metrics.watch(
        "airlock_worker_calls", "Requests handed to a model worker",
        lambda: {(t, m): float(lane.dispatched) for (t, m), lane in state.lanes.items()}, ("tenant", "model"),
    )  # fmt: skip
    state.metrics.watch(
        "airlock_live_workers", "Workers whose process is alive",
        lambda: {**{(t, m): float(lane.live_workers()) for (t, m), lane in state.lanes.items()},
                 **{(t, m): float(lane.live_workers()) for (t, m), lane in state.text_lanes.items()}},
        ("tenant", "model"), gauge=True,
    )  # fmt: skip
    state.metrics.watch(
        "airlock_backend_up", "1 while the [state]/[limits] server answers, 0 while it is marked down",
        lambda: {(name,): float(getattr(owner, "available", True))
                 for name, owner in (("state", state.store), ("limits", state.limiter))
                 if getattr(owner, "backend", None) is not None},
        ("backend",), gauge=True,
    )  # fmt: skip
    state.metrics.watch(
        "airlock_audit_writable",
        "1 while audit rows are committed (the last commit succeeded, none stalled), else 0",
        lambda: {(): float(state.audit is None or state.audit.writable)}, (), gauge=True,
    )  # fmt: skip
    state.metrics.watch(
        "airlock_audit_chain_intact",
        "1 while the audit log reaches the recorded head along its chain, 0 once rows were cut or replaced",
        lambda: {(): float(state.audit_chain is None)}, (), gauge=True,
    )  # fmt: skip
    state.metrics.watch(
        "airlock_generations_running", "Text generations holding a worker now",
        lambda: {(t, m): float(lane.running) for (t, m), lane in state.text_lanes.items()},
        ("tenant", "model"), gauge=True,
    )  # fmt: skip


def _check_guards(admitted: list[tuple[ModelConfig, Path]]) -> None:
    """A guard policy is for text: a text model's messages and answers, or a tensor model's BYTES
    tensors (at least one BYTES input declared in ``inputs``; its BYTES outputs are checked too).
    Each policy's guards are built now, so a bad one stops the start, not a request."""
    for model, staged in admitted:
        if model.guard is None:
            continue
        if not _is_text(staged, model) and not any(spec.datatype == "BYTES" for spec in model.inputs):
            raise UsageError(
                f"config: models.{model.name}.guard: the guard checks text, and this tensor model declares "
                "no BYTES input in 'inputs' (numeric tensors are never guarded); declare its BYTES inputs or "
                "remove the guard table"
            )
        warm_guards(model.name, model.guard)


def _is_text(staged: Path, model: ModelConfig) -> bool:
    """Whether the model is served on the OpenAI-compatible text endpoints (runtime ``text-gguf``,
    given or told from the admitted file's content, as the worker will tell it)."""
    if model.runtime is not None:
        return model.runtime == TEXT_RUNTIME
    fd = os.open(staged, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return detect_runtime(fd) == TEXT_RUNTIME
    finally:
        os.close(fd)


def _admin_app(state: GatewayState) -> Starlette:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[Any] = [Route("/metrics", metrics, methods=["GET"])]
    return Starlette(routes=routes)
