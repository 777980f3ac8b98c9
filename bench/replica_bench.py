"""Gateway replicas on PostgreSQL + Redis against one gateway on SQLite + in-process budgets.

Issue 17's gateway bench: requests/s of 1 vs 3 replicas on the same machine, and the latency the
shared servers add (p50) over the embedded backends. Real ``airlock serve`` processes (plain HTTP on
loopback, one sandboxed worker per replica, the affine ONNX model of the tests), real PostgreSQL and
Redis servers started as the tests start them (tests/gateway/_servers.py: Debian's packages).

Three setups, each measured the same way: (1) one replica, SQLite + in process; (2) one replica,
PostgreSQL + Redis; (3) three replicas, PostgreSQL + Redis, requests spread round-robin.
* sequential: ``--requests`` calls one at a time (p50, p99 in ms);
* load: ``--connections`` keep-alive connections for ``--seconds`` (requests/s).
On a small shared machine three replicas compete for the same cores as the client and the servers:
the number to read there is the added p50, not the scaling.

Usage: python bench/replica_bench.py [--requests 300] [--connections 32] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.gateway import _models  # noqa: E402  (the tests' model and servers)
from tests.gateway._servers import PASSWORD, Postgres, Redis, backend_config  # noqa: E402

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
ENV = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}


def _airlock(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "airlock", *args], capture_output=True, text=True, env=ENV, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"airlock {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


def _config(folder: Path, backends: str, key_file: Path) -> Path:
    folder.mkdir(parents=True)
    _models.affine(folder / "affine.onnx")
    path = folder / "gateway.toml"
    path.write_text(
        f"""[server]
host = "127.0.0.1"
port = 0
admin_port = 0
state = "state.db"
request_timeout_seconds = 30
max_connections_per_address = 1024

[audit]
key_file = "{key_file}"

[defaults]
requests_per_minute = 10000000
tensor_bytes_per_minute = 100000000000
max_concurrent = 1000

[models.affine]
path = "affine.onnx"
runtime = "onnx"
tenants = ["bench"]
inputs = [{{ name = "x", datatype = "FP32", shape = [-1, 4] }}]

{backends}""",
        encoding="utf-8",
    )
    return path


def _start(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = config.with_name("serve.log")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "airlock", "serve", "--config", str(config)],
            stderr=sink, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=ENV,
        )  # fmt: skip
    end = time.monotonic() + 180
    while time.monotonic() < end and process.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("message") == "listening":
                return process, f"http://127.0.0.1:{entry['port']}"
        time.sleep(0.1)
    raise SystemExit(f"a replica did not start: {log.read_text(errors='replace')[-2000:]}")


async def _sequential(urls: list[str], token: str, count: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    samples = []
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(count):
            started = time.perf_counter()
            response = await client.post(
                f"{urls[i % len(urls)]}/v2/models/affine/infer", json=BODY, headers=headers
            )
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return samples


async def _load(urls: list[str], token: str, connections: int, seconds: float) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {token}"}
    done, failed = 0, 0
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker(n: int) -> None:
            nonlocal done, failed
            url = f"{urls[n % len(urls)]}/v2/models/affine/infer"
            while time.monotonic() < end:
                response = await client.post(url, json=BODY, headers=headers)
                done += response.status_code == 200
                failed += response.status_code != 200

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(connections)))
    return done / (time.monotonic() - started), failed


def _setup(
    root: Path, name: str, replicas: int, backends: str
) -> tuple[list[subprocess.Popen[bytes]], list[str], str]:
    key_file = root / f"{name}.key"
    key_file.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
    configs = [_config(root / f"{name}-{n}", backends, key_file) for n in range(replicas)]
    if backends:
        _airlock("serve", "--config", str(configs[0]), "--migrate")
    _airlock("tenant", "add", "bench", "--config", str(configs[0]))
    token = _airlock("key", "create", "--tenant", "bench", "--config", str(configs[0]))
    started = [_start(config) for config in configs]
    return [p for p, _ in started], [u for _, u in started], token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per setup")
    parser.add_argument("--connections", type=int, default=32, help="connections under load")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds under load per setup")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="airlock-replica-bench-"))
    postgres, redis = Postgres(), Redis()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    try:
        shared = backend_config(postgres, redis)
        for name, replicas, shared_state in [
            ("embedded", 1, False),
            ("shared", 1, True),
            ("shared3", 3, True),
        ]:
            backends = ""
            if shared_state:  # each shared setup starts from an empty database of its own
                with psycopg.connect(postgres.url, password=PASSWORD, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE bench_{name}".encode())
                backends = shared.replace(postgres.url, postgres.url.replace("/postgres", f"/bench_{name}"))
            processes, urls, token = _setup(root, name, replicas, backends)
            try:
                asyncio.run(_sequential(urls, token, 20))  # warm up
                samples = asyncio.run(_sequential(urls, token, args.requests))
                rate, failed = asyncio.run(_load(urls, token, args.connections, args.seconds))
                p50 = statistics.median(samples)
                p99 = statistics.quantiles(samples, n=100)[98]
                label = f"{replicas} replica{'s' if replicas > 1 else ''}, {'PostgreSQL + Redis' if backends else 'SQLite + in process'}"
                print(f"{label:<40} sequential p50 {p50:6.2f} ms  p99 {p99:6.2f} ms   "
                      f"{args.connections} connections: {rate:7.1f} req/s ({failed} not 200)", flush=True)  # fmt: skip
            finally:
                for process in processes:
                    process.send_signal(signal.SIGTERM)
                for process in processes:
                    process.wait(60)
    finally:
        postgres.close()
        redis.close()


if __name__ == "__main__":
    main()
