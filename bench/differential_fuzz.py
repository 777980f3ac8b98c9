"""Long differential fuzzing runs: airlock's readers against the real loaders, on generated files.

The same generators and invariants as the bounded runs in the test suite (tests/formats/*_fuzz.py),
with many more seeds. The real loaders run only in throwaway subprocesses. Prints, per target and
seed, how many files both sides read alike, both refused, or airlock alone refused, and every
disagreement (a disagreement is a bug: airlock must read a file as the loader does, or refuse it).

Usage: PYTHONPATH=src .venv/bin/python bench/differential_fuzz.py [--seeds 20] [--count 5000] [--only npy]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.formats import npy_fuzz, torchzip_fuzz  # noqa: E402
from tests.formats_hf import gguf_fuzz, st_fuzz  # noqa: E402

TARGETS: dict[str, Callable[[Path, int, int], tuple[list[str], dict[str, int]]]] = {
    "npy": npy_fuzz.disagreements,
    "safetensors": st_fuzz.disagreements,
    "torch-zip": torchzip_fuzz.disagreements,
    "gguf": gguf_fuzz.disagreements,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--only", choices=sorted(TARGETS))
    args = parser.parse_args()
    failures = 0
    for name, run in TARGETS.items():
        if args.only and name != args.only:
            continue
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                bad, stats = run(Path(folder), seed, args.count)
            print(f"{name} seed {seed}: {stats} in {time.perf_counter() - started:.1f}s", flush=True)
            for line in bad:
                print("  DISAGREE", line[:400])
            failures += len(bad)
    print(f"{failures} disagreements")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
