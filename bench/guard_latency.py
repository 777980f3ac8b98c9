"""Latency of the guard pipeline (without the prompt-injection classifier) per 1 KB text, warm.

    .venv/bin/python bench/guard_latency.py                 # default pipeline, regex-only PII
    .venv/bin/python bench/guard_latency.py --runs 2000     # more samples
    .venv/bin/python bench/guard_latency.py --spacy-model en_core_web_sm   # with spaCy NER too

Texts are generated here (seeded), about 1,024 characters each, in five kinds: English prose,
prose with PII (emails, phone numbers, cards, IBANs, IPs), markdown with links and an image,
Cyrillic/Greek/CJK text, and text with hidden characters and homoglyphs. The guard is built once
and warmed; each sample times one ``Guard.check``. Reported: p50 / p99 / max per kind and over all,
and the p50 of each step alone; wall-clock time and the thread's CPU time side by side (on a loaded
machine the wall-clock tail is the scheduler's, the CPU-time tail the guard's). Target (issue 15): p50 < 2 ms and p99 < 10 ms per 1 KB text for the
full default pipeline without spaCy, 2 cores, warm. The load average is printed: other processes on
a shared machine inflate the tail.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

from airlock.guard import Guard, GuardConfig, PIIConfig

WORDS = (
    "the model server returns a summary of the quarterly report and the team reviews each item before "
    "release while the assistant drafts answers for customers who ask about invoices shipping and refunds"
).split()


def _fill(rng: random.Random, pieces: list[str], size: int = 1024) -> str:
    out: list[str] = []
    length = 0
    while length < size:
        piece = rng.choice(pieces) if rng.random() < 0.15 else rng.choice(WORDS)
        out.append(piece)
        length += len(piece) + 1
    return " ".join(out)[:size]


def texts(rng: random.Random, n: int) -> dict[str, list[str]]:
    pii = [
        "bob.smith@example.com",
        "+1 212-555-0123",
        "4111 1111 1111 1111",
        "DE89370400440532013000",
        "192.168.10.20",
    ]
    markdown = [
        "[docs](https://docs.example.org/guide)",
        "**bold**",
        "![logo](https://cdn.example/logo.png)",
        "`code`",
        "see https://example.com/a?b=1",
    ]
    foreign = ["Привет", "мир", "καλημέρα", "κόσμε", "你好", "世界", "naïve", "café"]
    hidden = ["p\u0430ypal", "ig\u200bnore", "a\u202eb", "\U000e0041\U000e0042", "\uff49\uff47\uff4e"]
    kinds = {"prose": [""], "pii": pii, "markdown": markdown, "non-latin": foreign, "hidden": hidden}
    return {
        kind: [_fill(rng, pieces) if pieces != [""] else _fill(rng, WORDS) for _ in range(n)]
        for kind, pieces in kinds.items()
    }


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1e3
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3
    return f"p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  max {ordered[-1] * 1e3:7.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000, help="samples per text kind (default 1000)")
    parser.add_argument("--spacy-model", help="an installed spaCy model to add (default none)")
    args = parser.parse_args()

    started = time.perf_counter()
    config = GuardConfig(pii=PIIConfig(spacy_model=args.spacy_model))
    guard = Guard(config)
    built = time.perf_counter() - started
    corpus = texts(random.Random(15), 50)  # noqa: S311  # reproducible bench texts
    for batch in corpus.values():  # warm: every code path and cache once
        for text in batch:
            guard.check(text)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    print(f"guard built in {built:.2f} s (imports included); steps: {', '.join(s.name for s in guard.steps)}")
    print(
        f"spaCy model: {args.spacy_model or 'none (regex-only PII)'}; text size {len(corpus['prose'][0])} characters"
    )
    print("wall clock (what a caller waits) | CPU time of the thread (without preemption by other load)")
    everything: list[float] = []
    everything_cpu: list[float] = []
    for kind, batch in corpus.items():
        samples = []
        cpu = []
        for i in range(args.runs):
            text = batch[i % len(batch)]
            c = time.thread_time()
            t = time.perf_counter()
            guard.check(text)
            samples.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        everything.extend(samples)
        everything_cpu.extend(cpu)
        print(f"  {kind:10s} {_percentiles(samples)} | {_percentiles(cpu)}")
    print(f"  {'all':10s} {_percentiles(everything)} | {_percentiles(everything_cpu)}")
    print("per step alone (p50 over all kinds):")
    for step in guard.steps:
        samples = []
        for batch in corpus.values():
            for text in batch:
                t = time.perf_counter()
                step.check(text)
                samples.append(time.perf_counter() - t)
        print(f"  {step.name:12s} p50 {statistics.median(samples) * 1e3:6.3f} ms")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
