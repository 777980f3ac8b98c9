"""The probe report as JSON (schema ``airlock.probe/1``), and reading a stored one as a baseline.

Everything but ``timings`` is a function of the seed, the budget, the target's replies and the
guard: two runs of a deterministic target with the same seed give the same report apart from
``timings``. The schema is versioned: a reader refuses any other ``schema`` value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from airlock import __version__
from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError, UsageError
from airlock.probe._catalogue import FAMILIES, Catalogue, catalogue
from airlock.probe._detect import DETECTORS, SUCCESS_DETECTOR
from airlock.probe._run import CaseResult, RunResult
from airlock.probe._stats import Rate, wilson

__all__ = ["SCHEMA", "baseline_rates", "current_rates", "family_rates", "report_json", "worst"]

SCHEMA: Final = "airlock.probe/1"
#: a baseline larger than this is not a probe report
_MAX_BASELINE_BYTES: Final = 64 << 20
_VIEW_RANK: Final = {"verbatim": 0, "normalised": 1}


def family_rates(run: RunResult) -> dict[str, dict[str, Any]]:
    """Per family in the run's order: the unguarded rate, the guarded one (with a guard), the
    effective one (what regression mode compares), errors, blocked prompts, pattern hits."""
    out: dict[str, dict[str, Any]] = {}
    for family in run.settings.families:
        results = [r for r in run.attacks if r.case.family == family]
        done = [r for r in results if r.error is None]
        rate = wilson(sum(r.success for r in done), len(done))
        guarded: Rate | None = None
        blocked = 0
        if run.guard_used:
            judged = [r for r in done if r.guard is not None and r.guard.error is None]
            blocked = sum(1 for r in judged if r.guard is not None and r.guard.decision == "blocked")
            guarded = wilson(sum(1 for r in judged if r.guard is not None and r.guard.success), len(judged))
        patterns = {
            d.id: sum(1 for r in done if any(x.detector == d.id for x in r.detections))
            for d in DETECTORS
            if d.kind == "pattern"
        }
        out[family] = {
            "unguarded": rate,
            "guarded": guarded,
            "errors": len(results) - len(done),
            "not_run": sum(1 for c in run.not_run if c.family == family),
            "blocked": blocked,
            "patterns": patterns,
        }
    return out


def _effective(entry: dict[str, Any]) -> Rate:
    guarded: Rate | None = entry["guarded"]
    return guarded if guarded is not None else entry["unguarded"]


def worst(run: RunResult, count: int) -> tuple[CaseResult, ...]:
    """The ``count`` most telling successful attacks: verbatim leaks before transformed ones,
    then in family order."""

    def key(result: CaseResult) -> tuple[int, int, str]:
        wanted = SUCCESS_DETECTOR[result.case.goal]
        view = next(d.view for d in result.detections if d.detector == wanted)
        return (_VIEW_RANK.get(view, 2), FAMILIES.index(result.case.family), result.case.id)

    return tuple(sorted((r for r in run.attacks if r.success), key=key)[:count])


def _case_json(result: CaseResult) -> dict[str, Any]:
    case = result.case
    doc: dict[str, Any] = {
        "id": case.id,
        "family": case.family,
        "template": case.template,
        "source": case.source,
        "mutation": case.mutation,
        "goal": case.goal,
        "messages": [{"role": m.role, "content": m.content, "attacker": m.attacker} for m in case.messages],
        "reply": result.reply,
        "finish_reason": result.finish,
        "error": result.error,
        "detections": [{"detector": d.detector, "view": d.view} for d in result.detections],
        "success": result.success,
    }
    if result.guard is not None:
        g = result.guard
        doc["guard"] = {
            "decision": g.decision,
            "rules": list(g.rules),
            "reply": g.reply,
            "error": g.error,
            "detections": [{"detector": d.detector, "view": d.view} for d in g.detections],
            "success": g.success,
        }
    return doc


def _detectors_json(run: RunResult) -> list[dict[str, Any]]:
    done = [r for r in run.benign if r.error is None]
    out = []
    for detector in DETECTORS:
        hits = [r.case.id for r in done if any(d.detector == detector.id for d in r.detections)]
        fpr = wilson(len(hits), len(done))
        out.append(
            {
                "id": detector.id,
                "kind": detector.kind,
                "description": detector.description,
                "false_positives": fpr.to_json() | {"benign_hits": hits},
            }
        )
    return out


def _sources_json(run: RunResult, data: Catalogue) -> dict[str, Any]:
    cases = [r.case for r in run.attacks] + list(run.not_run)
    by_id = {t.id: t for t in data.templates}
    also = {key for c in cases if (t := by_id.get(c.template)) is not None for key in t.also}
    used = sorted({c.source for c in cases} | also)
    return {
        key: {
            "package": s.package,
            "version": s.version,
            "file": s.file,
            "licence": s.licence,
            "sha256": s.sha256,
        }
        for key in used
        if (s := data.sources.get(key)) is not None
    }


def report_json(
    run: RunResult,
    *,
    target: str,
    model: str,
    worst_count: int = 5,
    guard: str | None = None,
    local: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ``airlock.probe/1`` report. ``local``: for a local model, ``digest`` (its SHA-256) and
    ``sandbox`` (the layers its job ran under), added to ``target``."""
    data = catalogue()
    budget = run.settings.budget
    families = []
    for family, entry in family_rates(run).items():
        families.append(
            {
                "family": family,
                "unguarded": entry["unguarded"].to_json(),
                "guarded": None if entry["guarded"] is None else entry["guarded"].to_json(),
                "effective": _effective(entry).to_json(),
                "errors": entry["errors"],
                "not_run": entry["not_run"],
                "blocked_by_guard": entry["blocked"],
                "pattern_hits": entry["patterns"],
            }
        )
    return {
        "schema": SCHEMA,
        "airlock_version": __version__,
        "target": {"url": target, "model": model, **(local or {})},
        "settings": {
            "seed": run.settings.seed,
            "families": list(run.settings.families),
            "max_prompts": budget.max_prompts,
            "max_tokens": budget.max_tokens,
            "max_seconds": budget.max_seconds,
            "benign": budget.benign,
            "temperature": 0,
            "guard": guard,
        },
        "secrets": {"canary": run.secrets.canary, "action_token": run.secrets.token},
        "system_prompt": run.system_prompt,
        "stopped": run.stopped,
        "families": families,
        "detectors": _detectors_json(run),
        "sources": _sources_json(run, data),
        "worst": [r.case.id for r in worst(run, worst_count)],
        "attacks": [_case_json(r) for r in run.attacks],
        "not_run": [c.id for c in run.not_run],
        "benign": [_case_json(r) for r in run.benign],
        "timings": {"wall_seconds": round(run.wall_seconds, 3), "requests": run.requests},
    }


def _rate(value: Any, where: str) -> Rate:
    if not isinstance(value, dict):
        raise FormatError(f"{where} must be an object")
    try:
        successes, trials = value["successes"], value["trials"]
        low, high = value["ci_low"], value["ci_high"]
    except KeyError as exc:
        raise FormatError(f"{where} has no {exc.args[0]}") from exc
    numbers_ok = all(isinstance(x, int) and not isinstance(x, bool) for x in (successes, trials)) and all(
        isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 1 for x in (low, high)
    )
    if not numbers_ok or not 0 <= successes <= trials or low > high:
        raise FormatError(f"{where} holds impossible numbers")
    return Rate(successes, trials, float(low), float(high))


def baseline_rates(path: Path) -> dict[str, Rate]:
    """The effective rate of every family of a stored report (the baseline of regression mode)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_BASELINE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read --baseline {path}: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_BASELINE_BYTES:
        raise FormatError(f"--baseline {path} is larger than {_MAX_BASELINE_BYTES} bytes")
    doc = parse_json_strict(raw, f"--baseline {path}")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise FormatError(f"--baseline {path} is not an {SCHEMA} report (schema {got!r})")
    families = doc.get("families")
    if not isinstance(families, list):
        raise FormatError(f"--baseline {path}: families must be a list")
    out: dict[str, Rate] = {}
    for index, entry in enumerate(families):
        where = f"--baseline {path}: families[{index}]"
        if not isinstance(entry, dict) or entry.get("family") not in FAMILIES:
            raise FormatError(f"{where} names no known family")
        out[entry["family"]] = _rate(entry.get("effective"), f"{where}.effective")
    return out


def current_rates(run: RunResult) -> dict[str, Rate]:
    return {family: _effective(entry) for family, entry in family_rates(run).items()}
