"""Sandbox costs, measured side by side with references in one run (not run by CI).

    .venv/bin/python bench/sandbox_bench.py [--rounds N]

* cold start: a sandboxed worker that imports torch, vs ``python -c pass`` and vs an unsandboxed
  ``python -c "import torch"`` (the part of the cost that is torch, not the sandbox);
* warm start: fork a job from the warm worker + full lockdown (rlimits, Landlock, seccomp) until it
  says ready, and the same plus loading a tiny model; target p50 < 50 ms;
* per call: one small-tensor inference through the channel vs the same call in process; target
  p50 overhead < 1 ms plus copying.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from airlock.sandbox import Sandbox
from airlock.sandbox._frames import FrameCaps, recv_frame, send_frame


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _line(name: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{name:<44} p50 {_pct(ms, 0.5):8.2f} ms   p99 {_pct(ms, 0.99):8.2f} ms   n={len(ms)}"


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def cold(rounds: int) -> None:
    plain: list[float] = []
    torch_plain: list[float] = []
    sandboxed: list[float] = []
    for _ in range(rounds):  # round robin, so drift hits every variant alike
        plain.append(_timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True)))
        torch_plain.append(_timed(lambda: subprocess.run([sys.executable, "-c", "import torch"], check=True)))
        sandboxed.append(_timed(lambda: Sandbox(runtimes=("torch",)).close()))
    print("== cold start")
    print(_line("python -c pass", plain))
    print(_line("python -c 'import torch' (no sandbox)", torch_plain))
    print(_line("sandboxed worker importing torch", sandboxed))
    print(f"   ratio sandboxed / python -c pass: {statistics.median(sandboxed) / statistics.median(plain):.1f}x; "
          f"sandbox cost over plain torch import: {(statistics.median(sandboxed) - statistics.median(torch_plain)) * 1000:.1f} ms")  # fmt: skip


def warm(sandbox: Sandbox, model: Path, rounds: int) -> None:
    caps = FrameCaps(1 << 20, 1 << 20)
    lockdown: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        sock, _pid = sandbox._spawn()
        recv_frame(sock, caps)  # "ready": forked and locked down
        lockdown.append(time.perf_counter() - started)
        send_frame(sock, {"type": "close"})
        sock.close()
    opened = [_timed(lambda: sandbox.open(model).close()) for _ in range(rounds)]
    print("== warm start (worker already running)")
    print(_line("fork + lockdown until ready", lockdown))
    print(_line("fork + lockdown + load tiny nn.Module", opened))
    print(f"   target p50 < 50 ms: {'met' if _pct(opened, 0.5) < 0.05 else 'NOT met'}")


def per_call(sandbox: Sandbox, model: Path, module: torch.nn.Module, rounds: int) -> None:
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    inside: list[float] = []
    local: list[float] = []
    with sandbox.open(model) as worker:
        for _ in range(50):
            worker.infer({"x": x})
        for _ in range(rounds):
            inside.append(_timed(lambda: worker.infer({"x": x})))
            with torch.inference_mode():
                local.append(_timed(lambda: module(torch.from_numpy(x)).numpy()))
    overhead = _pct(inside, 0.5) - _pct(local, 0.5)
    print("== per call, 1x16 float32 in, 1x4 out")
    print(_line("in process", local))
    print(_line("sandboxed worker", inside))
    print(
        f"   p50 overhead {overhead * 1000:.3f} ms: target < 1 ms {'met' if overhead < 0.001 else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="cold-start rounds (warm: x20, calls: x400)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny.pt"
        torch.save(module, model)
        cold(args.rounds)
        with Sandbox(runtimes=("torch",)) as sandbox:
            warm(sandbox, model, args.rounds * 20)
            per_call(sandbox, model, module, args.rounds * 400)


if __name__ == "__main__":
    main()
