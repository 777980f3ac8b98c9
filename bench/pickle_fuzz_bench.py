"""Long differential-fuzzing run for pickles (the CI test runs 2 x 300 files).

Generates pickles with tests/fixtures/picklefuzz.py, runs them with the real loaders in throwaway
subprocesses and checks airlock's invariant: a file any loader executes is never CLEAN, never
skipped in a folder, and is MALICIOUS with its payload named.

Usage: PYTHONPATH=src:. .venv/bin/python bench/pickle_fuzz_bench.py [--seeds 100-119] [--count 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.picklefuzz import run_campaign  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="100-109", help="first-last seed (inclusive)")
    parser.add_argument("--count", type=int, default=2000, help="files per seed")
    args = parser.parse_args()
    first, _, last = args.seeds.partition("-")
    failures = 0
    for seed in range(int(first), int(last or first) + 1):
        start = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            executed, disagree, problems = run_campaign(Path(tmp), seed, args.count)
        failures += len(problems)
        print(
            f"seed {seed}: {args.count} files, {executed} run by a loader, {disagree} where loaders "
            f"disagree, {len(problems)} violations ({time.monotonic() - start:.1f} s)",
            flush=True,
        )
        for problem in problems[:5]:
            print("  " + problem[:300])
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
