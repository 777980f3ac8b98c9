"""Scan throughput on a tree of many small files: ``airlock scan --jobs N`` against picklescan.

Issue 17's local-parallelism point: on a tree of 2,000 small files (1,000 PyTorch zip checkpoints,
500 safetensors files, 500 pickles, written by the real libraries) ``--jobs 2`` must take <= 0.6x
``--jobs 1`` and <= 0.6x picklescan. The tree is built once under bench/.work/tree2k (git-ignored).
Every tool runs as a CLI on the same tree (process start included), round-robin, ``--runs`` times;
medians of wall seconds are printed with the ratios and the load average (on a shared machine the
ratios are what to compare), with files/s and GB/s of each.

``--ray`` adds ``airlock scan --ray`` on the same tree: a local one-node Ray cluster with token
authentication (``--ray-cpus`` CPUs, default 2, the same as ``--jobs 2``; tests/_ray_cluster.py)
is started once for the run and stopped at the end. On one machine this measures what Ray costs
over local worker processes (connection, task round trips), not what a cluster of many machines
gains; the gateway replica part of issue 17 is bench/replica_bench.py.

airlock runs from this checkout (``src/`` first on PYTHONPATH), picklescan from the running
interpreter's environment (pinned in requirements/dev.lock).

Usage: python bench/scale_bench.py [--runs 5] [--jobs 1,2,auto] [--ray] [--ray-cpus 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREE = REPO / "bench" / ".work" / "tree2k"
COUNTS = {"torch": 1000, "safetensors": 500, "pickle": 500}


def build_tree() -> Path:
    marker = TREE.with_name("tree2k.complete")  # outside the tree: an empty file is no model
    if marker.exists():
        return TREE
    import torch  # the real writers; only to build the tree
    from safetensors.torch import save_file

    shutil.rmtree(TREE, ignore_errors=True)
    TREE.mkdir(parents=True)
    gen = torch.Generator().manual_seed(17)
    for i in range(COUNTS["torch"]):
        torch.save({"w": torch.randn(4, 4, generator=gen), "b": torch.zeros(4)}, TREE / f"m{i:04d}.pt")
    for i in range(COUNTS["safetensors"]):
        save_file({"w": torch.randn(4, 4, generator=gen)}, str(TREE / f"s{i:04d}.safetensors"))
    for i in range(COUNTS["pickle"]):
        (TREE / f"p{i:04d}.pkl").write_bytes(pickle.dumps({"a": [1, 2, 3], "b": "x" * (i % 200)}))
    marker.write_text("")
    return TREE


def airlock_command() -> list[str]:
    airlock = Path(sys.executable).with_name("airlock")
    return [str(airlock)] if airlock.exists() else [sys.executable, "-m", "airlock"]


def commands(jobs: list[str]) -> dict[str, list[str]]:
    base = airlock_command()
    out = {}
    for j in jobs:
        extra = [] if j == "auto" else ["--jobs", j]
        out[f"airlock --jobs {j}"] = [*base, "scan", "-q", *extra, str(TREE)]
    picklescan = Path(sys.executable).with_name("picklescan")
    if picklescan.exists():
        out["picklescan"] = [str(picklescan), "--path", str(TREE)]
    return out


def tree_bytes() -> int:
    return sum(p.stat().st_size for p in TREE.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", default="1,2,auto", help="comma-separated --jobs values (auto: no flag)")
    parser.add_argument("--ray", action="store_true", help="also airlock scan --ray on a local Ray cluster")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of that cluster (default 2)")
    args = parser.parse_args()
    build_tree()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    )
    cmds = {name: (cmd, env) for name, cmd in commands(args.jobs.split(",")).items()}
    with contextlib.ExitStack() as stack:
        if args.ray:
            sys.path.insert(0, str(REPO))
            from tests._ray_cluster import running_cluster

            cluster = stack.enter_context(running_cluster(args.ray_cpus))
            cmds[f"airlock --ray ({args.ray_cpus} cpus)"] = (
                [*airlock_command(), "scan", "-q", "--ray", cluster.address, str(TREE)],
                {**cluster.env(), "PYTHONPATH": env["PYTHONPATH"]},
            )
        times: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.runs):
            for name, (cmd, cmd_env) in cmds.items():
                start = time.perf_counter()
                proc = subprocess.run(cmd, env=cmd_env, capture_output=True, check=False)
                times[name].append(time.perf_counter() - start)
                if name.startswith("airlock") and proc.returncode != 0:
                    print(f"{name}: exit {proc.returncode}: {proc.stdout[-300:]!r} {proc.stderr[-300:]!r}")
                    return 1
    files, nbytes = sum(COUNTS.values()), tree_bytes()
    print(
        f"tree: {files} files, {nbytes / 1e6:.1f} MB ({COUNTS}); runs {args.runs}; "
        f"load {os.getloadavg()[0]:.2f}; cpus {os.cpu_count()}"
    )
    med = {name: statistics.median(t) for name, t in times.items()}
    one = med.get("airlock --jobs 1")
    ref = med.get("picklescan")
    for name, value in med.items():
        vs_one = f"{value / one:.2f}x jobs 1" if one else ""
        vs_ref = f"{value / ref:.2f}x picklescan" if ref else ""
        rate = f"{files / value:7.0f} files/s {nbytes / value / 1e9:7.4f} GB/s"
        print(f"{name:24} {value:6.3f} s  {rate}   {vs_one:14} {vs_ref}")
    print("goal: airlock --jobs 2 <= 0.6x --jobs 1 and <= 0.6x picklescan")
    print(
        "(times include process start; --ray also importing Ray, connecting and the job's workers starting)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
