"""The memorization audit's cost: texts scored per second through the sandbox (``lm-score``).

Trains the tiny GPT-2 of ``tests/probe/memo_train.py`` (a throwaway subprocess), then audits its four
canaries with ``--candidates`` each, and prints the wall time of the whole audit (gate, cold start,
load, scoring, completion) and the scoring throughput. Or ``--model PATH`` (a GGUF file or a
Hugging Face folder) with ``--records FILE``.

    .venv/bin/python bench/memorization_bench.py [--candidates 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.probe import memo_train

from airlock.probe.memorization import Settings, audit, load_records
from airlock.sandbox import SandboxPolicy
from airlock.sandbox._policy import SandboxLimits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--records", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model, records = args.model, args.records
        if model is None:
            model = Path(scratch) / "model"
            subprocess.run([sys.executable, memo_train.__file__, str(model)], check=True, capture_output=True)
        if records is None:
            records = Path(scratch) / "records.json"
            rows = [
                {"id": n, "template": memo_train.TEMPLATE.format(name=n, secret="{digits:6}"),  # noqa: S106
                 "text": memo_train.TEMPLATE.format(name=n, secret=s)}
                for n, s in (*memo_train.INSERTED, *memo_train.HELD_OUT)
            ]  # fmt: skip
            records.write_text(json.dumps({"records": rows}), encoding="utf-8")
        loaded = load_records(records)
        policy = SandboxPolicy(limits=SandboxLimits(wall_seconds=3600, threads=args.threads))
        started = time.perf_counter()
        report = audit(model, loaded, Settings(candidates=args.candidates), policy=policy)
        wall = time.perf_counter() - started
    scored = sum(r.candidates + 1 for r in report.records if r.rank is not None)
    print(report.to_text(), end="")
    print(
        f"audit wall time {wall:.1f} s for {scored} texts scored ({scored / wall:.0f} texts/s, cold start included)"
    )


if __name__ == "__main__":
    main()
