"""Gateway cost, measured side by side in one run (not run by CI).

    .venv/bin/python bench/gateway_bench.py [--requests N] [--connections C]

Everything runs on loopback: a small ONNX model (x[1,4] @ W + b) in a sandboxed worker.

* direct: ``airlock.sandbox.Worker.infer`` on the same staged model, one caller, in process;
* gateway: the same inference through ``airlock serve`` (uvicorn on 127.0.0.1, API key, budgets,
  audit row, metrics) from one keep-alive connection (httpx), JSON both ways;
* gateway, C concurrent connections: throughput, p50/p99, every status counted;
* budget: C connections against a tenant whose request budget is smaller than the burst:
  the only non-200 answers must be the intended 429s.

Target: the gateway adds < 2 ms p50 over the direct call. The client shares the machine's cores
with the server (and with whatever else runs there), so absolute numbers move between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from airlock.gateway import Gateway, TenantLimits, create_key, load_config, open_store
from airlock.sandbox import SandboxPolicy, Worker

#: like curl and most HTTP clients: without it, Nagle's algorithm holds the request body behind the
#: headers until the server's delayed ACK (~40 ms on Linux), which would measure the kernel, not us
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _line(name: str, samples: list[float], extra: str = "") -> str:
    ms = [s * 1000 for s in samples]
    return f"{name:<46} p50 {_pct(ms, 0.5):7.3f} ms  p99 {_pct(ms, 0.99):7.3f} ms  n={len(ms)} {extra}"


def _model(path: Path) -> None:
    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.ones(3, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def _config(folder: Path) -> Path:
    path = folder / "gateway.toml"
    path.write_text(
        """
[server]
port = 0
admin_port = 0
state = "state.db"
[defaults]
requests_per_minute = 10000000
tensor_bytes_per_minute = 10000000000
max_concurrent = 1000
[models.affine]
path = "affine.onnx"
runtime = "onnx"
tenants = ["bench", "burst"]
workers = 2
inputs = [{ name = "x", datatype = "FP32", shape = [-1, 4] }]
""",
        encoding="utf-8",
    )
    return path


def _request(token: str) -> bytes:
    body = json.dumps(BODY).encode()
    head = (
        f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One request on a keep-alive connection; returns the status (the body is read and dropped)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return status


async def _load(
    port: int, token: str, connections: int, total: int
) -> tuple[list[float], Counter[str], float]:
    """``connections`` keep-alive connections (a minimal asyncio HTTP/1.1 client, so that the client's
    own cost stays small next to the server's) sharing ``total`` requests."""
    request = _request(token)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    remaining = total

    async def one_connection() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(*NODELAY[0])
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    status = await _exchange(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    statuses[f"error:{type(exc).__name__}"] += 1
                    return
                statuses[str(status)] += 1
                if status == 200:
                    latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return latencies, statuses, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--requests", type=int, default=2000, help="sequential requests per single-caller phase"
    )
    parser.add_argument(
        "--connections", type=int, default=200, help="concurrent connections in the load phases"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _model(folder / "affine.onnx")
        config = load_config(_config(folder))
        store = open_store(config)
        store.add_tenant("bench", None)
        budget = args.connections * 5  # a burst of 10 x connections against 5 x connections tokens
        store.add_tenant("burst", TenantLimits(budget, 10**10, 1000))
        tokens = {t: create_key(store, t)[1] for t in ("bench", "burst")}
        store.close()

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        gateway = Gateway(config)
        asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(120)
        url = f"http://127.0.0.1:{gateway.port}"
        staged = next((folder / "state.db.models").glob("*.onnx"))
        try:
            x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
            with Worker(staged, runtime="onnx", policy=SandboxPolicy(limits=config.sandbox)) as worker:
                for _ in range(100):
                    worker.infer({"x": x})
                direct = []
                for _ in range(args.requests):
                    started = time.perf_counter()
                    worker.infer({"x": x})
                    direct.append(time.perf_counter() - started)

            through = []
            transport = httpx.HTTPTransport(socket_options=NODELAY)
            headers = {"Authorization": f"Bearer {tokens['bench']}"}
            with httpx.Client(base_url=url, headers=headers, transport=transport) as client:
                for _ in range(100):
                    client.post("/v2/models/affine/infer", json=BODY)
                for _ in range(args.requests):
                    started = time.perf_counter()
                    response = client.post("/v2/models/affine/infer", json=BODY)
                    through.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text

            async def sequential() -> list[float]:
                reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
                writer.get_extra_info("socket").setsockopt(*NODELAY[0])
                request, samples = _request(tokens["bench"]), []
                for _ in range(args.requests):
                    started = time.perf_counter()
                    assert await _exchange(reader, writer, request) == 200
                    samples.append(time.perf_counter() - started)
                writer.close()
                return samples

            raw = asyncio.run(sequential())
            print(
                f"gateway bench: 2 sandboxed ONNX workers per lane, loopback, {time.strftime('%Y-%m-%d %H:%M')}"
            )
            print(_line("direct Worker.infer (in process)", direct))
            print(_line("gateway, 1 connection, httpx client", through))
            print(_line("gateway, 1 connection, minimal asyncio client", raw))
            added = statistics.median(raw) - statistics.median(direct)
            print(
                f"{'gateway adds (p50, minimal client - direct)':<46} {added * 1000:7.3f} ms   target < 2 ms"
            )

            total = args.connections * 10
            latencies, statuses, wall = asyncio.run(
                _load(gateway.port, tokens["bench"], args.connections, total)
            )
            print(_line(f"gateway, {args.connections} connections", latencies,
                        f"{len(latencies) / wall:7.0f} req/s  statuses {dict(statuses)}"))  # fmt: skip
            latencies, statuses, wall = asyncio.run(
                _load(gateway.port, tokens["burst"], args.connections, total)
            )
            errors = {k: v for k, v in statuses.items() if k not in ("200", "429")}
            print(_line(f"budget {budget}/min, {total} requests", latencies,
                        f"statuses {dict(statuses)}  errors {errors or 'none'}"))  # fmt: skip
        finally:
            asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(60)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)


if __name__ == "__main__":
    main()
