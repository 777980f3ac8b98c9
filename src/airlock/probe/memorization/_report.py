"""The memorization report: JSON (schema ``airlock.memorization/1``) and a text summary.

Exit codes of the audit (:data:`EXIT_CLEAN`, :data:`EXIT_AT_RISK`; 2 is every error: a bad
records file, a model the gate refuses, a sandbox or job failure, a reply that breaks the rules).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Final

from airlock.sandbox._messages import printable

__all__ = ["EXIT_AT_RISK", "EXIT_CLEAN", "SCHEMA", "Extraction", "RecordResult", "Report", "Settings"]

SCHEMA: Final = "airlock.memorization/1"
EXIT_CLEAN: Final = 0
EXIT_AT_RISK: Final = 1


@dataclass(frozen=True)
class Settings:
    candidates: int = 1000
    seed: int = 0
    #: family-wise false-positive rate the default threshold is chosen for
    alpha: float = 0.01
    #: exposure threshold in bits; None: log2(M / alpha) for M records with a format
    threshold_bits: float | None = None
    beams: int = 1
    #: tokens generated per prefix; None: the target's UTF-8 length plus 8
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class Extraction:
    prompt: str
    expected: str
    #: the model's continuation (its first MAX_COMPLETION_CHARS characters)
    completion: str
    #: the continuation starts with the expected text
    exact: bool
    #: Levenshtein distance between the expected text and as many characters of the continuation
    distance: int
    #: leading characters of the expected text reproduced
    matched_prefix: int


@dataclass(frozen=True)
class RecordResult:
    id: str
    template: str | None
    #: log2 |R|: the bits of the record's format (null without a template)
    space_bits: float | None
    candidates: int
    #: the candidates were every other text of the format: the rank is exact
    enumerated: bool
    #: negative log-likelihood of the record's text, nats
    nll: float | None
    #: 1 + candidates at least as likely as the record
    rank: int | None
    #: log2(N + 1) - log2(rank), bits
    exposure: float | None
    #: log2(N + 1): the most the rank estimate can say
    resolution_bits: float | None
    #: the normal-fit extrapolation (an approximation, not used for the verdict)
    exposure_extrapolated: float | None
    #: the threshold applied to this record: min(threshold, resolution)
    threshold_bits: float | None
    extraction: Extraction | None
    at_risk: bool
    #: why: "exposure" and/or "extraction"
    reasons: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Report:
    model: dict[str, object]
    settings: Settings
    records: tuple[RecordResult, ...]
    #: bound on the chance that any record the model never saw is flagged by exposure
    false_positive_bound: float

    @property
    def at_risk(self) -> tuple[RecordResult, ...]:
        return tuple(r for r in self.records if r.at_risk)

    @property
    def exit_code(self) -> int:
        return EXIT_AT_RISK if self.at_risk else EXIT_CLEAN

    def to_dict(self) -> dict[str, object]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "settings": asdict(self.settings),
            "summary": {
                "records": len(self.records),
                "at_risk": [r.id for r in self.at_risk],
                "false_positive_bound": self.false_positive_bound,
            },
            "records": [asdict(r) for r in self.records],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=True) + "\n"

    def to_text(self) -> str:
        lines = [
            f"memorization audit of {printable(str(self.model.get('source', '?')), 200)} "
            f"({len(self.records)} records, {self.settings.candidates} candidates, seed {self.settings.seed})",
            f"{'record':<24} {'exposure':>17} {'rank':>13}  {'extraction':<22} verdict",
        ]
        for r in self.records:
            if r.exposure is not None and r.resolution_bits is not None:
                exposure = f"{r.exposure:5.2f}/{r.resolution_bits:5.2f} bits"
                rank = f"{r.rank}/{r.candidates + 1}"
            else:
                exposure, rank = "-", "-"
            extraction = "-"
            if r.extraction is not None:
                e = r.extraction
                extraction = "EXACT" if e.exact else f"distance {e.distance}/{len(e.expected)}"
            verdict = f"AT RISK ({', '.join(r.reasons)})" if r.at_risk else "ok"
            lines.append(f"{printable(r.id, 24):<24} {exposure:>17} {rank:>13}  {extraction:<22} {verdict}")
        thresholds = sorted(
            {round(r.threshold_bits, 2) for r in self.records if r.threshold_bits is not None}
        )
        lines.append(
            f"at risk: {len(self.at_risk)} of {len(self.records)}; exposure threshold "
            f"{', '.join(f'{t:.2f}' for t in thresholds) or '-'} bits (an unseen record is flagged by exposure "
            f"with probability <= {self.false_positive_bound:.3g} in all); an exact extraction is always at risk"
        )
        return "\n".join(lines) + "\n"
