"""A real airlock serve gateway with the SmolLM2-135M-Instruct GGUF over TLS (as tests/gateway/test_openai.py
starts it): one lane of one worker, greedy decoding deterministic with a seed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from airlock._cli import main
from airlock.gateway import Gateway, TenantLimits, create_key, load_config, open_store
from tests.gateway.conftest import Running, write_config
from tests.text.conftest import smollm2_path


@dataclass
class Served:
    running: Running
    url: str
    key_file: Path
    ca: Path


@contextmanager
def served_smollm2(folder: Path, *, context_length: int = 1024, max_tokens: int = 64) -> Iterator[Served]:
    certs = folder / "certs"
    assert main(["certs", "dev", "--out", str(certs), "--host", "127.0.0.1"]) == 0
    models = f"""
[tls]
cert = "{certs / "server.pem"}"
key = "{certs / "server.key"}"

[models.smol]
path = "{smollm2_path()}"
tenants = ["acme"]
max_tokens = {max_tokens}
context_length = {context_length}
"""
    server = "request_timeout_seconds = 120\ngeneration_timeout_seconds = 120"
    path = write_config(folder, models, server=server)
    # a model load on a loaded 2-core machine takes minutes: the sandbox's own limits for it
    text_sandbox = (
        "[sandbox]\nwall_seconds = 600\nstart_seconds = 300\nthreads = 2\nmemory_bytes = 4294967296"
    )
    source = path.read_text(encoding="utf-8")
    path.write_text(
        re.sub(r"\[sandbox\]\n(?:[a-z_]+ = \d+\n)+", text_sandbox + "\n", source), encoding="utf-8"
    )
    config = load_config(path)
    store = open_store(config)
    store.add_tenant("acme", TenantLimits(tokens_per_minute=10_000_000, max_generations=4))
    _, token = create_key(store, "acme")
    store.close()
    key_file = folder / "key.txt"
    key_file.write_text(token + "\n", encoding="utf-8")
    running = Running(Gateway(config), start_timeout=900)
    try:
        yield Served(running, f"https://127.0.0.1:{running.gateway.port}/v1", key_file, certs / "ca.pem")
    finally:
        running.stop()
