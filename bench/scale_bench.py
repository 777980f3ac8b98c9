"""Scan throughput on a tree of many small files: ``airlock scan --jobs N`` against picklescan.

Issue 17's local-parallelism point: on a tree of 2,000 small files (1,000 PyTorch zip checkpoints,
500 safetensors files, 500 pickles, written by the real libraries) ``--jobs 2`` must take <= 0.6x
``--jobs 1`` and <= 0.6x picklescan. The tree is built once under bench/.work/tree2k (git-ignored).
Every tool runs as a CLI on the same tree (process start included), round-robin, ``--runs`` times;
medians of wall seconds are printed with the ratios and the load average (on a shared machine the
ratios are what to compare), with the CPU seconds each used (user + system, its workers included:
what a busy machine cannot inflate as much as wall time), and files/s and GB/s of each.

``--ray`` adds ``airlock scan --ray`` on the same tree: a local one-node Ray cluster with token
authentication (``--ray-cpus`` CPUs, default 2, the same as ``--jobs 2``; tests/_ray_cluster.py)
is started once for the run and stopped at the end. On one machine this measures what Ray costs
over local worker processes (connection, task round trips), not what a cluster of many machines
gains; the gateway replica part of issue 17 is bench/replica_bench.py.

A machine shared with other work hides what a second process buys: with the kernel's autogroup
scheduling every process of one session shares that session's slice, so ``--jobs 2`` cannot beat
``--jobs 1`` in wall time while other sessions keep the CPUs busy. Each ``--jobs`` run is therefore
repeated in a wrapper that records the CPU seconds of the airlock process itself (``parent``) and
of its workers: the parent runs from start to end and scans too, so on an idle machine its CPU
time is about the run's wall time (the "idle estimate" column), whatever the load is now.

The floor: ``airlock scan`` of one small file (interpreter start, imports, output) is paid by every
run whatever ``--jobs`` is, so on 2 CPUs ``--jobs 2`` takes at least floor + (jobs 1 - floor) / 2;
the line "2-CPU bound" prints that, and what it is as a ratio of ``--jobs 1`` and of picklescan.

airlock runs from this checkout (``src/`` first on PYTHONPATH), picklescan from the running
interpreter's environment (pinned in requirements/dev.lock).

Usage: python bench/scale_bench.py [--runs 5] [--jobs 1,2,auto] [--ray [--ray-cpus 2]]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import resource
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
    out = {"airlock, 1 file (floor)": [*base, "scan", "-q", str(TREE / "p0000.pkl")]}
    for j in jobs:
        extra = [] if j == "auto" else ["--jobs", j]
        out[f"airlock --jobs {j}"] = [*base, "scan", "-q", *extra, str(TREE)]
    picklescan = Path(sys.executable).with_name("picklescan")
    if picklescan.exists():
        out["picklescan"] = [str(picklescan), "--path", str(TREE)]
    return out


#: runs the airlock CLI and writes "parent-cpu workers-cpu" to argv[1] when it leaves: through
#: os._exit (the scan command leaves without tearing the interpreter down, and its forked workers
#: leave that way too: only this process's own exit writes) or through sys.exit
_SPLIT = """
import os, resource, sys
def _report(path=sys.argv[1], me=os.getpid()):
    if os.getpid() != me:
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(path, "w") as out:
        out.write(f"{used.ru_utime + used.ru_stime} {kids.ru_utime + kids.ru_stime}")
_real_exit = os._exit
def _exit(code):
    _report()
    _real_exit(code)
os._exit = _exit
sys.argv = ["airlock", *sys.argv[2:]]
from airlock._cli import entry_point
try:
    entry_point()
finally:
    _report()
"""


def cpu_split(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(parent, workers) CPU seconds of one airlock run (``cmd`` without its program)."""
    out = TREE.with_name("split.txt")
    subprocess.run([sys.executable, "-c", _SPLIT, str(out), *cmd], env=env, capture_output=True, check=True)
    parent, workers = out.read_text().split()
    return float(parent), float(workers)


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
        cpu: dict[str, list[float]] = {name: [] for name in cmds}
        split: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds if "--jobs" in name}
        for _ in range(args.runs):
            for name, (cmd, cmd_env) in cmds.items():
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                proc = subprocess.run(cmd, env=cmd_env, capture_output=True, check=False)
                times[name].append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
                if name in split:
                    split[name].append(cpu_split(cmd[cmd.index("scan") :], cmd_env))
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
        rate = f"{files / value:6.0f} files/s {nbytes / value / 1e9:6.4f} GB/s"
        print(
            f"{name:24} {value:6.3f} s  cpu {statistics.median(cpu[name]):6.3f} s  {rate}   {vs_one:14} {vs_ref}"
        )
    print("CPU seconds of the airlock process itself and of its workers (medians); on an idle machine")
    print("the parent's is about the wall time:")
    for name, pairs in split.items():
        parent = statistics.median(p for p, _ in pairs)
        workers = statistics.median(w for _, w in pairs)
        one_cpu = (
            statistics.median(p for p, _ in split["airlock --jobs 1"]) if "airlock --jobs 1" in split else 0
        )
        ref_cpu = statistics.median(cpu["picklescan"]) if "picklescan" in cpu else 0
        ratios = f"{parent / one_cpu:.2f}x jobs 1" if one_cpu else ""
        ratios += f"   {parent / ref_cpu:.2f}x picklescan cpu" if ref_cpu else ""
        print(f"  {name:22} parent {parent:6.3f} s  workers {workers:6.3f} s   idle estimate {ratios}")
    floor = med["airlock, 1 file (floor)"]
    if one:
        bound = floor + (one - floor) / 2
        vs_ref = f"{bound / ref:.2f}x picklescan" if ref else ""
        print(f"{'2-CPU bound, jobs 2':24} {bound:6.3f} s  {'':12}   {bound / one:.2f}x jobs 1   {vs_ref}")
    print("goal: airlock --jobs 2 <= 0.6x --jobs 1 and <= 0.6x picklescan")
    print(
        "(times include process start; --ray also importing Ray, connecting and the job's workers starting)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
