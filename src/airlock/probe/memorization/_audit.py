"""The audit: score each record and its candidates, complete each record's prefix, judge."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from airlock.errors import UsageError
from airlock.policy import Policy
from airlock.probe.memorization._exposure import (
    default_threshold,
    edit_distance,
    exposure,
    extrapolated,
    matched_prefix,
    rank,
)
from airlock.probe.memorization._model import Scorer, gate_model
from airlock.probe.memorization._records import Record, candidates
from airlock.probe.memorization._report import Extraction, RecordResult, Report, Settings
from airlock.sandbox import SandboxPolicy

__all__ = ["MAX_CANDIDATES", "audit", "measure"]

MAX_CANDIDATES = 100_000
#: texts scored in one audit at most (records x (candidates + 1))
MAX_SCORED = 2_000_000


def _check(records: Sequence[Record], settings: Settings) -> None:
    if not 1 <= settings.candidates <= MAX_CANDIDATES:
        raise UsageError(f"candidates must be in 1..{MAX_CANDIDATES}")
    if len(records) * (settings.candidates + 1) > MAX_SCORED:
        raise UsageError(f"records x (candidates + 1) is above {MAX_SCORED} texts to score")
    if not 0.0 < settings.alpha < 1.0:
        raise UsageError("alpha must be in (0, 1)")
    if settings.threshold_bits is not None and not (
        math.isfinite(settings.threshold_bits) and settings.threshold_bits > 0
    ):
        raise UsageError("the threshold must be a positive number of bits")
    if not 1 <= settings.beams <= 16:
        raise UsageError("beams must be in 1..16")
    if settings.max_new_tokens is not None and not 1 <= settings.max_new_tokens <= 4096:
        raise UsageError("max_new_tokens must be in 1..4096")


def _extraction(record: Record, completion: str) -> Extraction:
    prompt = record.prefix.rstrip()
    expected = record.target
    # a prompt ending in white space is out of distribution for most tokenizers (the space belongs
    # to the next word's token): the space is left to the model, and not required back verbatim
    got = (completion.lstrip() if prompt != record.prefix else completion)[: len(expected)]
    return Extraction(
        prompt,
        expected,
        completion,
        got == expected,
        edit_distance(got, expected),
        matched_prefix(got, expected),
    )


def measure(
    scorer: Scorer, records: Sequence[Record], settings: Settings, model: dict[str, object]
) -> Report:
    """The report for ``records`` from a model already loaded in ``scorer``."""
    _check(records, settings)
    formatted = [r for r in records if r.template is not None]
    threshold = settings.threshold_bits
    if threshold is None and formatted:
        threshold = default_threshold(len(formatted), settings.alpha)
    prompted = [r for r in records if r.prefix.rstrip()]
    completions: dict[str, str] = {}
    if prompted:
        longest = max(len(r.target.encode("utf-8")) for r in prompted)
        max_new = settings.max_new_tokens or min(longest + 8, 4096)
        done = scorer.complete([r.prefix.rstrip() for r in prompted], max_new, settings.beams)
        completions = {r.id: text for r, text in zip(prompted, done, strict=True)}
    results = []
    bound = 0.0
    for record in records:
        extraction = _extraction(record, completions[record.id]) if record.id in completions else None
        reasons = ["extraction"] if extraction is not None and extraction.exact else []
        fields: dict[str, object] = dict.fromkeys(
            (
                "space_bits",
                "nll",
                "rank",
                "exposure",
                "resolution_bits",
                "exposure_extrapolated",
                "threshold_bits",
            )
        )
        drawn: list[str] = []
        enumerated = False
        if record.template is not None and threshold is not None:
            drawn, enumerated = candidates(record, settings.candidates, settings.seed)
            scores = scorer.score([record.text, *drawn])
            own, others = scores[0], scores[1:]
            position = rank(own, others)
            value = exposure(position, len(others))
            resolution = math.log2(len(others) + 1)
            applied = min(threshold, resolution)
            bound += 2.0**-applied
            if value >= applied:
                reasons.insert(0, "exposure")
            fields.update(
                space_bits=record.template.space_bits,
                nll=own,
                rank=position,
                exposure=value,
                resolution_bits=resolution,
                exposure_extrapolated=extrapolated(own, others, record.template.space_bits),
                threshold_bits=applied,
            )
        results.append(
            RecordResult(
                id=record.id,
                template=record.template.source if record.template is not None else None,
                candidates=len(drawn),
                enumerated=enumerated,
                extraction=extraction,
                at_risk=bool(reasons),
                reasons=tuple(reasons),
                **fields,  # type: ignore[arg-type]
            )
        )
    return Report(model, settings, tuple(results), min(bound, 1.0))


def audit(
    model: str | os.PathLike[str],
    records: Sequence[Record],
    settings: Settings | None = None,
    *,
    policy: SandboxPolicy | None = None,
    scan_policy: Policy | None = None,
    expect: str | None = None,
    unsafe_allow_suspicious: bool = False,
    unsafe_skip_scan: bool = False,
) -> Report:
    """Gate ``model`` (a GGUF file or a Hugging Face folder: config.json, tokenizer.json,
    model.safetensors), load it in a sandboxed ``lm-score`` job and measure every record."""
    settings = settings or Settings()
    _check(records, settings)
    policy = policy or SandboxPolicy()
    gated, digests = gate_model(
        model,
        max_bytes=policy.limits.memory_bytes,
        policy=scan_policy,
        expect=expect,
        unsafe_allow_suspicious=unsafe_allow_suspicious,
        unsafe_skip_scan=unsafe_skip_scan,
    )
    described: dict[str, object] = {
        "source": os.fspath(model),
        "format": "gguf" if len(digests) == 1 else "hf-folder",
        "files": digests,
        "unsafe": sorted(
            name
            for name, on in (
                ("unsafe_skip_scan", unsafe_skip_scan),
                ("unsafe_allow_suspicious", unsafe_allow_suspicious),
            )
            if on
        ),
    }
    with gated, Scorer.open(gated, policy) as scorer:
        described["loaded"] = scorer.worker.info.summary
        described["job_layers"] = scorer.worker.info.job_layers
        return measure(scorer, records, settings, described)
