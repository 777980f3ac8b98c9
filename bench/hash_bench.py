"""Hashing throughput, side by side on the same files: airlock vs model_signing vs openssl vs hashlib.

    .venv/bin/python bench/hash_bench.py            # 2 GiB folder (4 x 512 MiB) + one 2 GiB file
    .venv/bin/python bench/hash_bench.py --mib 64   # a quick run on small files

Each measurement runs in its own process (so peak RSS is that tool's alone, read with wait4) and is
the median of ``--runs`` runs, with the page cache warmed first. Python tools report the time of the
hashing call itself (interpreter start-up and imports excluded, so model_signing's 0.4 s import does
not count against it); openssl is timed as a whole process. Files go under bench/.work/ (git-ignored)
and are deleted at the end unless ``--keep``. Targets (issue 4): airlock >= model_signing on the
folder; airlock sharded >= 1.8x single-stream hashlib on the single file; airlock peak RSS < 64 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

_MIB = 1024 * 1024
_WORK = Path(__file__).resolve().parent / ".work"


def _child(kind: str, path: str, shard: int) -> None:
    """Run one measurement inside this (child) process; print the seconds the hashing took."""
    if kind == "airlock":
        from airlock.integrity import hash as airlock_hash

        start = time.perf_counter()
        airlock_hash(path, shard_size=shard or None)
    elif kind == "model_signing":
        from model_signing import hashing

        config = hashing.Config()  # type: ignore[no-untyped-call]
        if shard:
            config.use_shard_serialization(hashing_algorithm="sha256", shard_size=shard)
        else:
            config.use_file_serialization(hashing_algorithm="sha256")
        start = time.perf_counter()
        config.hash(path)
    elif kind == "hashlib":
        files = [path] if os.path.isfile(path) else sorted(str(p) for p in Path(path).iterdir())
        buf = bytearray(_MIB)
        view = memoryview(buf)
        start = time.perf_counter()
        for name in files:
            hasher = hashlib.sha256()
            with open(name, "rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    hasher.update(view[:n])
    else:
        raise SystemExit(f"unknown kind {kind}")
    print(f"{time.perf_counter() - start:.6f}")


def _measure(argv: list[str], timed_inside: bool) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}): {err[-2000:]}")
    seconds = float(out.strip().splitlines()[-1]) if timed_inside else wall
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def _make_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Small blocks keep this process small: a child's peak RSS (wait4) starts from its parent's at fork.
    block = _MIB
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(block, left)
            fh.write(os.urandom(n))
            left -= n


def _warm(path: Path) -> None:
    buf = bytearray(_MIB)
    for name in [path] if path.is_file() else sorted(path.iterdir()):
        with open(name, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def _bench(label: str, path: Path, shard: int, runs: int, size: int) -> dict[str, tuple[float, float]]:
    py = sys.executable
    me = str(Path(__file__).resolve())
    files = [str(path)] if path.is_file() else sorted(str(p) for p in path.iterdir())
    cases: list[tuple[str, list[str], bool]] = []
    if shard:
        cases.append(
            (
                f"airlock hash --shard-size {shard // _MIB}Mi",
                [py, me, "--child", "airlock", str(path), str(shard)],
                True,
            )
        )
    cases += [
        ("airlock hash (whole files)", [py, me, "--child", "airlock", str(path), "0"], True),
        ("model_signing API files", [py, me, "--child", "model_signing", str(path), "0"], True),
    ]
    if shard:
        cases.append(
            (
                "model_signing API shards 1e9 (its default)",
                [py, me, "--child", "model_signing", str(path), "1000000000"],
                True,
            )
        )
    cases += [
        ("openssl dgst -sha256", ["openssl", "dgst", "-sha256", *files], False),
        ("hashlib sha256 single stream", [py, me, "--child", "hashlib", str(path), "0"], True),
    ]
    results: dict[str, tuple[float, float]] = {}
    print(f"\n== {label}: {path.relative_to(_WORK.parent)} ({size / 1e9:.2f} GB), median of {runs} runs ==")
    print(f"{'tool':<46}{'seconds':>9}{'GB/s':>8}{'peak RSS MB':>13}")
    # Round-robin: each round runs every tool once, so drift (writeback of the freshly made
    # files, other load on a shared machine) hits every tool alike instead of the first one.
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name, _argv, _inside in cases}
    for _ in range(runs):
        for name, argv, inside in cases:
            rounds[name].append(_measure(argv, inside))
    for name, _argv, _inside in cases:
        samples = rounds[name]
        seconds = statistics.median(s for s, _ in samples)
        rss = max(r for _, r in samples)
        results[name] = (seconds, rss)
        print(f"{name:<46}{seconds:>9.3f}{size / seconds / 1e9:>8.2f}{rss:>13.1f}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "SHARD"), help=argparse.SUPPRESS)
    parser.add_argument("--mib", type=int, default=512, help="size of each folder file in MiB (default 512)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool; the median is reported")
    parser.add_argument("--shard-mib", type=int, default=128, help="airlock shard size for the single file")
    parser.add_argument("--keep", action="store_true", help="keep the generated files in bench/.work/")
    args = parser.parse_args()
    if args.child:
        kind, path, shard = args.child
        _child(kind, path, int(shard))
        return 0
    if shutil.which("openssl") is None:
        raise SystemExit("openssl not found on PATH")
    folder, single = _WORK / "folder", _WORK / "single.bin"
    part = args.mib * _MIB
    try:
        for i in range(4):
            f = folder / f"model-{i:05d}-of-00004.safetensors"
            if not f.exists() or f.stat().st_size != part:
                _make_file(f, part)
        if not single.exists() or single.stat().st_size != 4 * part:
            _make_file(single, 4 * part)
        os.sync()  # write the new files back now, not during the timings
        _warm(folder)
        _warm(single)
        size = 4 * part
        print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}")
        on_folder = _bench("folder, 4 files", folder, 0, args.runs, size)
        on_file = _bench("one file", single, args.shard_mib * _MIB, args.runs, size)
    finally:
        if not args.keep:
            shutil.rmtree(_WORK, ignore_errors=True)
    ours, ref = on_folder["airlock hash (whole files)"], on_folder["model_signing API files"]
    sharded = on_file[f"airlock hash --shard-size {args.shard_mib}Mi"]
    single_stream = on_file["hashlib sha256 single stream"]
    peak = max(ours[1], sharded[1], on_file["airlock hash (whole files)"][1])
    print("\n== ratios (higher is better) ==")
    print(f"folder: airlock / model_signing throughput   = {ref[0] / ours[0]:.2f}  (target >= 1.0)")
    print(
        f"file:   airlock sharded / hashlib 1 stream   = {single_stream[0] / sharded[0]:.2f}  (target >= 1.8)"
    )
    print(f"airlock peak RSS                             = {peak:.1f} MB  (target < 64)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
