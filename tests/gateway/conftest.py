"""A real gateway (uvicorn on 127.0.0.1, port 0, real sandboxed workers) in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airlock.gateway import Gateway, GatewayConfig, TenantLimits, create_key, load_config, open_store
from tests.gateway import _models


class Running:
    """Start ``gateway`` on a private event loop thread; :meth:`stop` shuts servers and workers down."""

    def __init__(self, gateway: Gateway, start_timeout: float = 120) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop", daemon=True)
        self.thread.start()
        try:
            asyncio.run_coroutine_threadsafe(gateway.start(), self.loop).result(start_timeout)
        except BaseException:
            self._end()
            raise

    def call(self, coro: object, timeout: float = 30) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def _end(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    def stop(self) -> None:
        self.call(self.gateway.stop())
        self._end()


def write_config(folder: Path, extra: str = "", *, server: str = "") -> Path:
    """The test config; ``server`` lines replace the defaults of the same key."""
    path = folder / "gateway.toml"
    defaults = (
        'host = "127.0.0.1"\nport = 0\nadmin_port = 0\nmax_body_bytes = 65536\n'
        'request_timeout_seconds = 1.5\nstate = "state.db"\n'
    )
    given = {line.split("=")[0].strip() for line in server.splitlines() if "=" in line}
    kept = "".join(f"{line}\n" for line in defaults.splitlines() if line.split("=")[0].strip() not in given)
    path.write_text(
        f"""
[server]
{kept}{server}

[defaults]
requests_per_minute = 6000
tensor_bytes_per_minute = 100000000
max_concurrent = 8

[sandbox]
wall_seconds = 30
memory_bytes = 4294967296

{extra}
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Env:
    folder: Path
    config: GatewayConfig
    running: Running
    url: str
    #: tenant -> token
    tokens: dict[str, str]
    key_ids: dict[str, str]


MODELS = """
[models.affine]
path = "affine.onnx"
runtime = "onnx"
tenants = ["acme", "globex", "limited"]
inputs = [{ name = "x", datatype = "FP32", shape = [-1, 4] }]

[models.globex-private]
path = "affine.onnx"
runtime = "onnx"
tenants = ["globex"]

[models.slow]
path = "slow.onnx"
runtime = "onnx"
tenants = ["acme"]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("gateway")
    _models.affine(folder / "affine.onnx")
    _models.slow(folder / "slow.onnx", steps=120)
    config = load_config(write_config(folder, MODELS))
    store = open_store(config)
    store.add_tenant("acme", None)
    store.add_tenant("globex", None)
    store.add_tenant(
        "limited", TenantLimits(requests_per_minute=5, tensor_bytes_per_minute=1000, max_concurrent=2)
    )
    tokens, key_ids = {}, {}
    for tenant in ("acme", "globex", "limited"):
        record, tokens[tenant] = create_key(store, tenant)
        key_ids[tenant] = record.key_id
    store.close()
    running = Running(Gateway(config))
    try:
        yield Env(folder, config, running, f"http://127.0.0.1:{running.gateway.port}", tokens, key_ids)
    finally:
        running.stop()
