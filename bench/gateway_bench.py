"""Gateway cost, measured side by side in one run (not run by CI).

    .venv/bin/python bench/gateway_bench.py [--requests N] [--connections 1,16,64,256] [--seconds S]
                                            [--parts a,b,c,d] [--breakdown] [--profile FILE]

Everything runs on loopback over TLS, servers in their own processes, one minimal asyncio HTTP/1.1
client (so the client's own cost stays small next to the servers'). The model is a small ONNX
affine map (x[N,4] @ W + b) with 2 sandboxed workers per lane.

(a) throughput: ``airlock serve`` next to a bare Starlette/uvicorn echo app on the same stack
    (uvicorn, h11, the same TLS context settings), at each connection count;
    goal: the gateway >= 0.6x the echo app's requests/s at 64 connections.
(b) fairness: tenant B's latency (sequential small requests) alone, then while tenant A sends
    back-to-back maximum-size requests (JSON, then binary tensors) on two connections, from a
    process of its own (so A's TLS work does not delay B inside the client);
    goal: B's p99 < 250 ms and < 2x B's p99 alone.
(c) overhead: ``airlock.sandbox.Worker.infer`` called directly, then the same inference through the
    gateway on one keep-alive connection; goal: the gateway adds < 2 ms p50.
(d) budget: 64 connections against a tenant whose request budget is half the burst: the only
    non-200 answers must be the intended 429s.

The client shares the machine's cores with the servers and with whatever else runs there, so
absolute numbers move between runs; compare the columns of one run. Each (a) line also says what
one answer cost in CPU: the server's (its process and every descendant: sandboxed workers, codec
processes; ``--breakdown`` splits it by thread and process) and the client's own (with its share of
a core), read from /proc. On a machine with few cores the client and the servers compete: the
CPU columns, unlike requests/s, do not depend on who else got the cores. ``--profile FILE`` runs
the gateway's event loop under cProfile (stats written when it stops).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Final

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from airlock.gateway import TenantLimits, create_key, dev_certificates, load_config, open_store
from airlock.sandbox import SandboxPolicy, Worker

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}
ECHO_REPLY = b'{"model_name":"affine","id":"x","outputs":[{"name":"y","datatype":"FP32","shape":[1,3],"data":[9.0,11.0,13.0]}]}'
MAX_BODY = 8 * 1024 * 1024
#: requests per minute of the "burst" tenant in (d): its burst is 2x this
BURST_BUDGET = 640


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _line(name: str, samples: list[float], extra: str = "") -> str:
    ms = [s * 1000 for s in samples]
    return f"{name:<50} p50 {_pct(ms, 0.5):8.3f} ms  p99 {_pct(ms, 0.99):8.3f} ms  n={len(ms)} {extra}"


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
        f"""
[server]
port = 0
admin_port = 0
state = "state.db"
max_body_bytes = {MAX_BODY}
request_timeout_seconds = 60
# one client address drives everything here
preauth_requests_per_second = 1000000.0
preauth_burst = 1000000
max_connections_per_address = 1024
[tls]
cert = "certs/server.pem"
key = "certs/server.key"
[defaults]
requests_per_minute = 10000000
tensor_bytes_per_minute = 100000000000
max_concurrent = 1000
[models.affine]
path = "affine.onnx"
runtime = "onnx"
tenants = ["bench", "a", "b", "burst"]
workers = 2
inputs = [{{ name = "x", datatype = "FP32", shape = [-1, 4] }}]
""",
        encoding="utf-8",
    )
    return path


def _request(token: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


class _Client:
    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port, self.context = port, context

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.context, server_hostname="127.0.0.1", limit=2**24
        )
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One request on a keep-alive connection; returns the status (the body is read and dropped)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return status


async def _load(
    client: _Client, request: bytes, connections: int, seconds: float
) -> tuple[list[float], Counter[str], float]:
    """``connections`` keep-alive connections sending back to back for ``seconds``.

    Returns the 200s' latencies, the statuses, and the wall time; the client's own CPU time for
    the run is left in ``_Load.client_cpu``."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    stop = time.perf_counter() + seconds

    async def one_connection() -> None:
        reader, writer = await client.connect()
        try:
            while time.perf_counter() < stop:
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

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    _Load.client_cpu = time.process_time() - cpu
    return latencies, statuses, time.perf_counter() - started


class _Load:
    #: CPU seconds the client (this process) used in the last :func:`_load`
    client_cpu = 0.0


def _stat(path: Path) -> tuple[str, int, float] | None:
    """(command, parent pid, CPU seconds) from a /proc stat file."""
    try:
        head, _, rest = path.read_text().rpartition(")")
    except OSError:
        return None
    fields = rest.split()  # after the command: state, ppid, ..., utime (field 14), stime (15)
    return head.partition("(")[2], int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


_TICK: Final = os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds used so far by a server process, by thread, and by every live descendant
    (sandboxed workers, codec processes), by command."""
    processes: dict[int, tuple[str, int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(entry / "stat")) is not None:
            processes[int(entry.name)] = stat
    tree, grew = {pid}, True
    while grew:  # a child's pid may be lower than its parent's: grow the tree to a fixpoint
        grew = False
        for child, (_, parent, _) in processes.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    used: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        if (stat := _stat(task / "stat")) is not None:
            # Python does not name OS threads: the thread id tells them apart (the busiest one of
            # the gateway is its event loop; lane threads each carry one worker call at a time)
            used[f"server thread {task.name}"] = stat[2]
    for member in tree - {pid}:
        name, _, cpu = processes[member]
        used[name] = used.get(name, 0.0) + cpu
    return used


def _cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0.0}


def _echo_server(port_file: str, cert: str, key: str) -> None:
    """A bare Starlette app on uvicorn (h11, TLS): reads the body, answers a fixed inference reply."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def infer(request: Request) -> Response:
        await request.body()
        return Response(ECHO_REPLY, media_type="application/json")

    app = Starlette(routes=[Route("/v2/models/affine/infer", infer, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    Path(port_file).write_text(str(sock.getsockname()[1]))
    config = uvicorn.Config(
        app, http="h11", lifespan="off", log_config=None, access_log=False, ws="none",
        ssl_certfile=cert, ssl_keyfile=key, server_header=False, date_header=False,
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])


def _profiled_gateway(stats: str, config_path: str) -> None:
    """``airlock serve`` with its event loop on this thread under cProfile; stats written on SIGTERM."""
    import cProfile

    from airlock.gateway import Gateway
    from airlock.gateway._observe import configure_json_logs

    configure_json_logs()
    gateway = Gateway(load_config(Path(config_path)))
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, gateway.request_stop)

    async def serve() -> None:
        await gateway.start()
        await gateway.wait()

    profiler = cProfile.Profile(time.thread_time)  # CPU time: preemption by other processes is not counted
    profiler.enable()
    try:
        loop.run_until_complete(serve())
    finally:
        profiler.disable()
        profiler.dump_stats(stats)


def _start_gateway(config: Path, profile: str | None = None) -> tuple[subprocess.Popen[str], int]:
    command = ["-m", "airlock", "serve", "--config", str(config)]
    if profile:  # the event loop under cProfile (stats written when the gateway stops)
        command = [__file__, "--profiled-gateway", profile, str(config)]
    # The log goes to a file, as it would to journald: a pipe drained by a thread of this (busy,
    # single-GIL) client filled up and the gateway's loop blocked on each log line (~1 ms a request)
    log = config.with_name("gateway.log")
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, *command], stderr=sink, stdin=subprocess.DEVNULL, text=True
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line still being written
                continue
            if entry.get("message") == "listening":
                return process, int(entry["port"])
        time.sleep(0.1)
    raise SystemExit(f"the gateway did not start (exit {process.poll()}):\n{log.read_text()[-2000:]}")


def _start_echo(folder: Path, certs: Path) -> tuple[subprocess.Popen[str], int]:
    port_file = folder / "echo.port"
    process = subprocess.Popen(
        [sys.executable, __file__, "--echo-server", str(port_file), str(certs / "server.pem"),
         str(certs / "server.key")], stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("the echo server did not start")
        time.sleep(0.05)
    time.sleep(0.5)
    return process, int(port_file.read_text())


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _max_bodies(token: str) -> tuple[bytes, bytes]:
    """Tenant A's largest requests: JSON just under the body cap, and binary of the same rows."""
    row = "[1.5,2.25,3.125,4.0625],"
    rows = (MAX_BODY - 200) // len(row)
    data = "[" + (row * rows)[:-1] + "]"
    text = f'{{"inputs":[{{"name":"x","datatype":"FP32","shape":[{rows},4],"data":{data}}}]}}'
    json_request = _request(token, text.encode())
    x = np.tile(np.array([[1.5, 2.25, 3.125, 4.0625]], dtype=np.float32), ((MAX_BODY - 4096) // 16, 1))
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()  # fmt: skip
    binary_request = _request(
        token, header + x.tobytes(), f"Inference-Header-Content-Length: {len(header)}\r\n"
    )
    return json_request, binary_request


def _hog(port: str, cafile: str, token: str, kind: str, seconds: str) -> None:
    """Tenant A, in a process of its own: two connections sending back-to-back maximum-size
    requests for ``seconds``; prints the statuses as JSON. (In the client's own event loop, A's
    8 MB of TLS encryption per request delayed B's requests on the client side, not the gateway.)"""
    request = dict(zip(("JSON", "binary"), _max_bodies(token), strict=True))[kind]
    client = _Client(int(port), ssl.create_default_context(cafile=cafile))
    sent: Counter[str] = Counter()
    stop = time.perf_counter() + float(seconds)

    async def one() -> None:
        reader, writer = await client.connect()
        while time.perf_counter() < stop:
            sent[str(await _exchange(reader, writer, request))] += 1
        writer.close()

    async def both() -> None:
        await asyncio.gather(one(), one())

    asyncio.run(both())
    print(json.dumps(dict(sent)), flush=True)


async def _fairness(client: _Client, tokens: dict[str, str], seconds: float, cafile: Path) -> None:
    small = _request(tokens["b"], json.dumps(BODY).encode())

    async def tenant_b() -> list[float]:
        reader, writer = await client.connect()
        samples = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            started = time.perf_counter()
            assert await _exchange(reader, writer, small) == 200
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)
        writer.close()
        return samples

    for kind in ("JSON", "binary"):
        # B alone just before A starts: the machine's load drifts, and the ratio compares the
        # two windows next to each other
        alone = await tenant_b()
        print(_line("(b) tenant B alone", alone, f"load average {os.getloadavg()[0]:.1f}"))
        hog = subprocess.Popen(
            [sys.executable, __file__, "--hog", str(client.port), str(cafile), tokens["a"], kind,
             str(seconds + 1.0)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        await asyncio.sleep(1.0)  # A's requests are under way
        loaded = await tenant_b()
        out, _ = hog.communicate(timeout=120)
        sent = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": hog.returncode}
        p99, base = _pct(loaded, 0.99), _pct(alone, 0.99)
        verdict = "ok" if p99 < 0.25 and p99 < 2 * base else "MISSED"
        print(_line(f"(b) tenant B while A sends 8 MB {kind} x2", loaded,
                    f"A answered {sent}  goal p99 < 250 ms and < {2 * base * 1000:.1f} ms: {verdict}"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests in (c)")
    parser.add_argument("--connections", default="1,16,64,256", help="connection counts for (a)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per load step in (a) and (b)")
    parser.add_argument("--parts", default="a,b,c,d", help="which parts to run (a,b,c,d)")
    parser.add_argument("--breakdown", action="store_true", help="(a): CPU per request by thread/process")
    parser.add_argument("--profile", metavar="FILE", help="run the gateway under cProfile, stats to FILE")
    parser.add_argument("--echo-server", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--profiled-gateway", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--hog", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hog:
        _hog(*args.hog)
        return
    if args.profiled_gateway:
        _profiled_gateway(*args.profiled_gateway)
        return
    parts = set(args.parts.split(","))
    if args.echo_server:
        _echo_server(*args.echo_server)
        return
    counts = [int(c) for c in args.connections.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _model(folder / "affine.onnx")
        certs = folder / "certs"
        dev_certificates(certs, ["127.0.0.1"])
        config_path = _config(folder)
        config = load_config(config_path)
        store = open_store(config)
        for tenant in ("bench", "a", "b"):
            store.add_tenant(tenant, TenantLimits(10**7, 10**11, 1000))
        store.add_tenant("burst", TenantLimits(BURST_BUDGET, 10**11, 1000))
        tokens = {t: create_key(store, t)[1] for t in ("bench", "a", "b", "burst")}
        store.close()
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        print(f"gateway bench, TLS on loopback, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip

        echo, echo_port = _start_echo(folder, certs)
        gateway, port = _start_gateway(config_path, args.profile)
        try:
            request = _request(tokens["bench"], json.dumps(BODY).encode())
            asyncio.run(_load(_Client(port, context), request, 4, 1.0))  # warm-up
            asyncio.run(_load(_Client(echo_port, context), request, 4, 1.0))
            for connections in counts if "a" in parts else ():
                rates, costs, clients, busiest = [], [], [], []
                for name, target, server in (("echo app", echo_port, echo), ("gateway", port, gateway)):
                    before = _tree_cpu(server.pid)
                    latencies, statuses, wall = asyncio.run(
                        _load(_Client(target, context), request, connections, args.seconds)
                    )
                    rates.append(len(latencies) / wall)
                    # CPU per answer: what the server (with its workers) and the client each spent
                    spent = _cpu_delta(before, _tree_cpu(server.pid))
                    costs.append(sum(spent.values()) / max(1, len(latencies)))
                    clients.append(_Load.client_cpu / max(1, len(latencies)))
                    busiest.append(max(spent.values(), default=0.0) / max(1, len(latencies)))
                    print(_line(f"(a) {name}, {connections} connections", latencies,
                                f"{rates[-1]:7.0f} req/s  {dict(statuses)}  server "
                                f"{costs[-1] * 1e3:.3f} ms CPU/req  client "
                                f"{_Load.client_cpu / max(1, len(latencies)) * 1e3:.3f} ms CPU/req "
                                f"({_Load.client_cpu / wall:.0%} of a core)"))  # fmt: skip
                    if args.breakdown:
                        for part, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
                            print(
                                f"      {part:<30} {seconds / max(1, len(latencies)) * 1e3:7.3f} ms CPU/req"
                            )
                goal = "  goal >= 0.6" if connections == 64 else ""
                print(f"{'(a) gateway / echo app':<50} {rates[1] / rates[0]:.2f}x{goal}  "
                      f"(server CPU per request: {costs[0] / costs[1]:.2f}x)  "
                      f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
                # what the CPU alone allows, whoever else runs: on this machine's cores, server and
                # client together; and with a core for every thread and process, the busiest one
                cores = os.cpu_count() or 1
                ceiling = [cores / max(1e-9, c + k) for c, k in zip(costs, clients, strict=True)]
                bound = [1 / max(1e-9, b) for b in busiest]
                print(f"{'(a) CPU ceilings, req/s (echo, gateway, ratio)':<50} "
                      f"{cores} cores: {ceiling[0]:.0f}, {ceiling[1]:.0f}, {ceiling[1] / ceiling[0]:.2f}x;  "
                      f"busiest thread/process: {bound[0]:.0f}, {bound[1]:.0f}, "
                      f"{bound[1] / bound[0]:.2f}x")  # fmt: skip

            if "b" in parts:
                asyncio.run(_fairness(_Client(port, context), tokens, args.seconds, certs / "ca.pem"))

            if "c" in parts:
                staged = next((folder / "state.db.models").glob("*.onnx"))
                x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
                with Worker(staged, runtime="onnx", policy=SandboxPolicy(limits=config.sandbox)) as worker:
                    for _ in range(100):
                        worker.infer({"x": x})
                    direct = []
                    for _ in range(args.requests):
                        started = time.perf_counter()
                        worker.infer({"x": x})
                        direct.append(time.perf_counter() - started)

                async def sequential() -> list[float]:
                    reader, writer = await _Client(port, context).connect()
                    samples = []
                    for _ in range(args.requests):
                        started = time.perf_counter()
                        assert await _exchange(reader, writer, request) == 200
                        samples.append(time.perf_counter() - started)
                    writer.close()
                    return samples

                through = asyncio.run(sequential())
                print(_line("(c) direct Worker.infer (in process)", direct))
                print(_line("(c) gateway, 1 TLS connection", through))
                added = statistics.median(through) - statistics.median(direct)
                print(f"{'(c) gateway adds (p50)':<50} {added * 1000:8.3f} ms   goal < 2 ms")

            if "d" in parts:
                burst = _request(tokens["burst"], json.dumps(BODY).encode())

                async def budget() -> tuple[list[float], Counter[str]]:
                    client, statuses, samples = _Client(port, context), Counter[str](), []

                    async def one() -> None:
                        reader, writer = await client.connect()
                        for _ in range(2 * BURST_BUDGET // 64):
                            started = time.perf_counter()
                            status = await _exchange(reader, writer, burst)
                            statuses[str(status)] += 1
                            if status == 200:
                                samples.append(time.perf_counter() - started)
                            else:  # a refusal sent before the body was read closes the connection
                                writer.close()
                                reader, writer = await client.connect()
                        writer.close()

                    await asyncio.gather(*(one() for _ in range(64)))
                    return samples, statuses

                samples, statuses = asyncio.run(budget())
                errors = {k: v for k, v in statuses.items() if k not in ("200", "429")}
                print(_line(f"(d) budget {BURST_BUDGET}/min, {2 * BURST_BUDGET} requests", samples,
                            f"{dict(statuses)}  errors {errors or 'none'}"))  # fmt: skip
        finally:
            _stop(gateway)
            _stop(echo)


if __name__ == "__main__":
    main()
