"""Renderers of a probe report (the JSON document of :mod:`airlock.probe._report`): SARIF 2.1.0,
HTML and a terminal summary. They only render: every value comes from the report.

Model replies and attack prompts are hostile text. HTML escapes every value (``html.escape``
with quotes) and carries a Content-Security-Policy that allows no script and no remote resource;
the terminal summary escapes control characters.
"""

from __future__ import annotations

import hashlib
import html
from typing import Any, Final

from airlock import __version__

__all__ = ["render_html", "render_sarif", "render_text"]

_INFO_URI: Final = "https://pypi.org/project/model-airlock/"
_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'"


def _pct(rate: dict[str, Any]) -> str:
    if rate["rate"] is None:
        return "n/a (0 trials)"
    return (
        f"{100 * rate['rate']:.1f}% ({rate['successes']}/{rate['trials']}; "
        f"95% CI {100 * rate['ci_low']:.1f}-{100 * rate['ci_high']:.1f}%)"
    )


def render_sarif(report: dict[str, Any]) -> dict[str, Any]:
    """One rule per attack family, one result per successful attack (``error``), fingerprinted by
    family, template and the detector's view so an alert keeps its identity between runs."""
    rules = [
        {
            "id": f"probe/{entry['family']}",
            "name": entry["family"],
            "shortDescription": {"text": f"prompt injection: {entry['family']}"},
            "helpUri": _INFO_URI,
            "properties": {"tags": ["security", "prompt-injection"], "success": entry["effective"]},
        }
        for entry in report["families"]
    ]
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    results = []
    target = report["target"]["url"]
    for attack in report["attacks"]:
        guarded = attack.get("guard")
        if not (guarded["success"] if guarded is not None else attack["success"]):
            continue
        rule = f"probe/{attack['family']}"
        judged = guarded if guarded is not None and guarded["reply"] is not None else attack
        views = ",".join(f"{d['detector']}:{d['view']}" for d in judged["detections"])
        fingerprint = hashlib.sha256(f"{rule}|{attack['template']}|{attack['goal']}".encode()).hexdigest()
        results.append(
            {
                "ruleId": rule,
                "ruleIndex": index[rule],
                "level": "error",
                "message": {
                    "text": f"attack {attack['id']} ({attack['goal']}) succeeded against model "
                    f"{report['target']['model']}: {views}"
                },
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": target}}}],
                "partialFingerprints": {"airlockProbe/v1": fingerprint},
                "properties": {
                    "case": attack["id"],
                    "source": attack["source"],
                    "mutation": attack["mutation"],
                },
            }
        )
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "airlock probe",
                        "version": __version__,
                        "informationUri": _INFO_URI,
                        "rules": rules,
                    }
                },
                "results": results,
                "properties": {"schema": report["schema"], "seed": report["settings"]["seed"]},
            }
        ],
    }


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _transcript(attack: dict[str, Any]) -> str:
    rows = [
        f"<div class='msg {_e(m['role'])}'><b>{_e(m['role'])}</b><pre>{_e(m['content'])}</pre></div>"
        for m in attack["messages"]
    ]
    rows.append(f"<div class='msg reply'><b>reply</b><pre>{_e(attack['reply'])}</pre></div>")
    found = ", ".join(f"{d['detector']} ({d['view']})" for d in attack["detections"])
    head = f"{_e(attack['id'])}: {_e(attack['family'])}, goal {_e(attack['goal'])}, detections: {_e(found)}"
    return f"<details><summary>{head}</summary>{''.join(rows)}</details>"


def render_html(report: dict[str, Any]) -> str:
    families = "".join(
        f"<tr><td>{_e(f['family'])}</td><td>{_e(_pct(f['unguarded']))}</td>"
        f"<td>{_e(_pct(f['guarded']) if f['guarded'] else '-')}</td><td>{_e(f['blocked_by_guard'])}</td>"
        f"<td>{_e(f['errors'])}</td><td>{_e(f['not_run'])}</td></tr>"
        for f in report["families"]
    )
    detectors = "".join(
        f"<tr><td>{_e(d['id'])}</td><td>{_e(d['kind'])}</td><td>{_e(d['description'])}</td>"
        f"<td>{_e(_pct(d['false_positives']))}</td></tr>"
        for d in report["detectors"]
    )
    by_id = {a["id"]: a for a in report["attacks"]}
    worst = "".join(_transcript(by_id[i]) for i in report["worst"]) or "<p>No attack succeeded.</p>"
    stopped = f"<p class='warn'>Stopped early: {_e(report['stopped'])}</p>" if report["stopped"] else ""
    target = report["target"]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
        f"<title>airlock probe: {_e(target['model'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px}"
        "table{border-collapse:collapse}pre{white-space:pre-wrap;background:#f6f6f6;padding:4px}"
        ".warn{color:#a00}</style></head><body>"
        f"<h1>airlock probe: {_e(target['model'])} at {_e(target['url'])}</h1>"
        f"<p>seed {_e(report['settings']['seed'])}, schema {_e(report['schema'])}, "
        f"airlock {_e(report['airlock_version'])}, guard {_e(report['settings']['guard'] or 'none')}</p>"
        f"{stopped}<h2>Attack success rate per family</h2><table><tr><th>family</th><th>unguarded</th>"
        f"<th>with guard</th><th>blocked by guard</th><th>errors</th><th>not run</th></tr>{families}</table>"
        "<h2>Detectors: false positives on benign conversations</h2><table><tr><th>detector</th>"
        f"<th>kind</th><th>what</th><th>false-positive rate</th></tr>{detectors}</table>"
        f"<h2>Worst transcripts</h2>{worst}</body></html>\n"
    )


def _clean(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def render_text(report: dict[str, Any], regressions: list[dict[str, Any]] | None = None) -> str:
    lines = [f"airlock probe: {_clean(report['target']['model'])} at {_clean(report['target']['url'])}"]
    lines.append(f"seed {report['settings']['seed']}, {report['timings']['requests']} requests")
    if report["stopped"]:
        lines.append(f"stopped early: {report['stopped']} ({len(report['not_run'])} attacks not run)")
    lines.append("attack success rate per family:")
    for f in report["families"]:
        guarded = f"; with guard {_pct(f['guarded'])}" if f["guarded"] else ""
        errors = f"; {f['errors']} errors" if f["errors"] else ""
        lines.append(f"  {f['family']:<26} {_pct(f['unguarded'])}{guarded}{errors}")
    lines.append("detector false positives on benign conversations:")
    for d in report["detectors"]:
        lines.append(f"  {d['id']:<26} {_pct(d['false_positives'])}")
    if report["worst"]:
        lines.append("worst: " + ", ".join(report["worst"]))
    for r in regressions or []:
        lines.append(f"REGRESSION {r['family']}: {r['reason']}")
    return "\n".join(lines) + "\n"
