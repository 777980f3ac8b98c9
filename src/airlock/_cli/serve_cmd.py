"""``airlock serve --config FILE.toml``: the multi-tenant inference gateway (docs/serve.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import UsageError
from airlock.gateway import Gateway, TlsConfig, load_config, open_store
from airlock.gateway._observe import configure_json_logs
from airlock.gateway._server import admit_models, migrate_state

__all__ = ["COMMAND"]

_log = logging.getLogger("airlock.gateway")


@dataclass(frozen=True)
class ServeCommand:
    name: str = "serve"
    help: str = "serve admitted models to authenticated tenants (KServe v2, and the OpenAI API for text models, over HTTPS)"
    description: str = (
        "Admit every model in the config (verify -> scan; anything not CLEAN after its allowances is "
        "refused, with its findings), start one sandboxed worker lane per (tenant, model), and serve the "
        "KServe v2 protocol (tensor models) and the OpenAI-compatible API (text models: /v1/chat/completions, "
        "/v1/completions, /v1/models). The config is read only from --config. Without TLS the gateway binds only "
        "loopback addresses unless --unsafe-plaintext. Metrics: http://127.0.0.1:ADMIN_PORT/metrics. "
        "Exit codes: 0 stopped cleanly, 1 a model was refused (--admit-only), 2 error."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--config", required=True, metavar="FILE.toml", help="gateway config (docs/serve.md)"
        )
        parser.add_argument(
            "--tls-cert", metavar="PEM", help="server certificate chain (overrides [tls] cert)"
        )
        parser.add_argument("--tls-key", metavar="PEM", help="server private key (overrides [tls] key)")
        parser.add_argument("--host", help="listen address (overrides [server] host)")
        parser.add_argument(
            "--port", type=int, help="listen port (overrides [server] port; 0 = any free port)"
        )
        parser.add_argument(
            "--admit-only", action="store_true", help="run admission, print each model's record, and exit"
        )
        parser.add_argument(
            "--migrate",
            action="store_true",
            help="bring the [state] PostgreSQL schema up to date (versioned, under a lock; safe to repeat), then exit",
        )
        parser.add_argument(
            "--unsafe-plaintext",
            action="store_true",
            help="UNSAFE: allow plaintext HTTP on a non-loopback address (keys and tensors travel in clear)",
        )

    def run(self, args: argparse.Namespace) -> int:
        config = load_config(args.config)
        server = config.server
        if args.host is not None:
            server = dataclasses.replace(server, host=args.host)
        if args.port is not None:
            if not 0 <= args.port <= 65535:
                raise UsageError(f"--port must be 0..65535, got {args.port}")
            server = dataclasses.replace(server, port=args.port)
        config = dataclasses.replace(config, server=server)
        if args.migrate:
            print(migrate_state(config))
            return 0
        if args.admit_only:
            return _admit_only(config)
        tls = None
        if args.tls_cert or args.tls_key:
            if not (args.tls_cert and args.tls_key):
                raise UsageError("--tls-cert and --tls-key go together")
            client_ca = config.tls.client_ca if config.tls else None
            tls = TlsConfig(Path(args.tls_cert).absolute(), Path(args.tls_key).absolute(), client_ca)
        configure_json_logs()
        if args.unsafe_plaintext:
            print("airlock serve: WARNING: --unsafe-plaintext: keys and tensors may cross the network in clear",
                  file=sys.stderr)  # fmt: skip
        gateway = Gateway(config, tls=tls, unsafe_plaintext=args.unsafe_plaintext)
        _run(gateway)
        return 0


async def _serve(gateway: Gateway) -> None:
    await gateway.start()
    await gateway.wait()


def _run(gateway: Gateway) -> None:
    """Serve on a loop thread; SIGTERM/SIGINT in the main thread ask for a clean stop.

    (uvicorn re-raises a signal it captured once its server returns, which would end the process
    before the workers are stopped and the audit head is logged; on a non-main thread it leaves
    signals alone.)
    """
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    def body() -> None:
        try:
            loop.run_until_complete(_serve(gateway))
        except BaseException as exc:
            failure.append(exc)
        finally:
            loop.close()

    def on_signal(signum: int, frame: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(gateway.request_stop)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=body, name="airlock-serve")
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise failure[0]


def _admit_only(config: object) -> int:
    from airlock.gateway import GatewayConfig

    assert isinstance(config, GatewayConfig)
    store = open_store(config)
    try:
        results = admit_models(config, store)
    finally:
        store.close()
    refused = 0
    for model, record, staged in results:
        refused += staged is None
        print(json.dumps({"model": model.name, "decision": record.decision, "reason": record.reason,
                          "verdict": record.verdict, "integrity": record.integrity, "digest": record.digest,
                          "findings": list(record.findings)}))  # fmt: skip
    return 1 if refused else 0


COMMAND = ServeCommand()
