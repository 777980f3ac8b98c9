"""Long differential run: airlock.load against torch.load on many seeded random checkpoints.

    PYTHONPATH=src python bench/load_differential.py [--count 20000] [--seed 1]

The CI test (tests/load/test_differential.py) runs 2,000 files with one seed; this runs as many
as asked, in batches, and prints the outcome counts and the first mismatches. Exit 1 on any.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.load.gen import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2000, help="files per generated folder")
    args = parser.parse_args()
    totals: dict[str, int] = {}
    mismatches: list[str] = []
    start = time.monotonic()
    done = 0
    while done < args.count:
        n = min(args.batch, args.count - done)
        with tempfile.TemporaryDirectory() as tmp:
            counts, bad = run(args.seed * 1_000_003 + done, n, Path(tmp))
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        mismatches += bad
        done += n
        print(
            f"{done} files, {time.monotonic() - start:.0f} s: {totals}, {len(mismatches)} mismatches",
            flush=True,
        )
    for line in mismatches[:20]:
        print(line)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
