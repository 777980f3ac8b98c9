"""Side by side: ``airlock convert`` vs ``torch.load(weights_only=True)`` + ``safetensors.torch.save_file``.

Generates a checkpoint (default 2 GiB, ~300 float32 tensors of varied sizes) under bench/.work/,
then converts it with each tool in its own subprocess, ``--repeat`` times, alternating the order.
Prints wall time, peak RSS (the child's ``VmHWM`` from /proc, which counts touched file-backed pages)
and the ratios airlock / reference; targets: time ratio <= 1.0, airlock peak RSS <= 1.25 x the
largest tensor + 100 MB. The outputs are checked to hold the same tensors. Not run in CI.

    .venv/bin/python bench/convert_bench.py [--gib 2] [--tensors 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"

_CHILD = r"""
import json, resource, sys, time
tool, src, dst = sys.argv[1:4]
start = time.perf_counter()
if tool == "airlock":
    from airlock.loading import convert
    convert(src, dst)
else:
    import torch
    from safetensors.torch import save_file
    state = torch.load(src, weights_only=True)
    save_file(state, dst)
seconds = time.perf_counter() - start
# VmHWM is this process's own peak (ru_maxrss would carry the parent's peak across exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "maxrss_kib": hwm}))
"""


def build(path: Path, gib: float, count: int) -> int:
    """Write the checkpoint; return the largest tensor's size in bytes."""
    import torch

    total = int(gib * (1 << 30))
    # sizes: a few large embedding-like tensors and many small ones, summing to ``total``
    weights = [8.0 if i % 50 == 0 else (1.0 if i % 3 else 0.05) for i in range(count)]
    scale = total / sum(weights)
    state = {}
    largest = 0
    gen = torch.Generator().manual_seed(0)
    for i, w in enumerate(weights):
        numel = max(16, int(w * scale) // 4 // 256 * 256)
        t = torch.empty(numel // 256, 256)
        t.uniform_(-1, 1, generator=gen)
        state[f"layers.{i}.weight"] = t
        largest = max(largest, numel * 4)
    torch.save(state, path)
    return largest


def run(tool: str, src: Path, dst: Path) -> dict[str, float]:
    if dst.exists():
        dst.unlink()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, tool, str(src), str(dst)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{proc.stderr}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def same_tensors(a: Path, b: Path) -> bool:
    from safetensors import safe_open

    with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
        names = list(fa.keys())
        if set(names) != set(fb.keys()):
            return False
        return all(fa.get_tensor(k).equal(fb.get_tensor(k)) for k in names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gib", type=float, default=2.0, help="checkpoint size in GiB")
    parser.add_argument("--tensors", type=int, default=300, help="number of tensors")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool (median reported)")
    parser.add_argument("--keep", action="store_true", help="keep bench/.work afterwards")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    src = WORK / "checkpoint.pt"
    try:
        t0 = time.perf_counter()
        # built and compared in child processes: this parent stays small (its RSS would not leak into
        # the measurements, which read each child's own VmHWM, but it keeps the machine honest)
        code = "import sys; from bench.convert_bench import build; print(build(__import__('pathlib').Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])))"
        out = subprocess.run([sys.executable, "-c", code, str(src), str(args.gib), str(args.tensors)],
                             capture_output=True, text=True, check=True, cwd=WORK.parent.parent)  # fmt: skip
        largest = int(out.stdout.strip().splitlines()[-1])
        print(
            f"built {src.stat().st_size / (1 << 30):.2f} GiB, {args.tensors} tensors, largest {largest / (1 << 20):.1f} MiB "
            f"in {time.perf_counter() - t0:.1f} s; machine: {os.cpu_count()} cores, shared with other jobs"
        )
        results: dict[str, list[dict[str, float]]] = {"airlock": [], "reference": []}
        for i in range(args.repeat):
            order = ["airlock", "reference"] if i % 2 == 0 else ["reference", "airlock"]
            for tool in order:
                r = run(tool, src, WORK / f"{tool}.safetensors")
                results[tool].append(r)
                print(
                    f"run {i + 1} {tool:9s}: {r['seconds']:.2f} s, peak RSS {r['maxrss_kib'] / 1024:.0f} MiB"
                )
        code = "import sys; from bench.convert_bench import same_tensors; sys.exit(0 if same_tensors(*map(__import__('pathlib').Path, sys.argv[1:])) else 1)"
        same = subprocess.run([sys.executable, "-c", code, str(WORK / "airlock.safetensors"), str(WORK / "reference.safetensors")],
                              check=False, cwd=WORK.parent.parent)  # fmt: skip
        assert same.returncode == 0, "outputs differ"
        med = {tool: (statistics.median(r["seconds"] for r in rs), statistics.median(r["maxrss_kib"] * 1024 for r in rs))
               for tool, rs in results.items()}  # fmt: skip
        a_t, a_rss = med["airlock"]
        r_t, r_rss = med["reference"]
        budget = 1.25 * largest + 100 * (1 << 20)
        print(f"median airlock   {a_t:.2f} s  peak RSS {a_rss / (1 << 20):.0f} MiB")
        print(f"median reference {r_t:.2f} s  peak RSS {r_rss / (1 << 20):.0f} MiB")
        print(
            f"time ratio airlock/reference = {a_t / r_t:.2f} (target <= 1.0): {'OK' if a_t <= r_t else 'MISSED'}"
        )
        print(
            f"airlock peak RSS {a_rss / (1 << 20):.0f} MiB vs budget 1.25 x largest + 100 MB = {budget / (1 << 20):.0f} MiB: "
            f"{'OK' if a_rss <= budget else 'MISSED'} (reference/airlock RSS = {r_rss / a_rss:.1f}x)"
        )
        print("outputs hold the same tensors: yes")
    finally:
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
