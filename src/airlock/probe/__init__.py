"""airlock probe: how does a served model hold up against prompt injection, before you rely on it?

Sends seeded attack prompts of several families to an OpenAI-compatible chat endpoint, finds
successes with canary detectors (a secret planted in the system prompt, an action token the
attack asks for), measures every detector's false-positive rate on benign conversations against
the same target, and reports per-family success rates with Wilson intervals (docs/probe.md)::

    from airlock.probe import Budget, ChatClient, Settings, Target, probe, report_json

    with ChatClient(Target("https://127.0.0.1:8443/v1", "smol", api_key=key), max_tokens=48, seed=0) as chat:
        run = probe(chat, Settings(seed=0, budget=Budget(max_prompts=18)))
    report = report_json(run, target="https://127.0.0.1:8443/v1", model="smol")

Nothing but the target is contacted; the attack data ships with airlock (with its provenance).
"""

from __future__ import annotations

from airlock.probe._catalogue import FAMILIES, catalogue
from airlock.probe._client import ChatClient, Target, read_api_key
from airlock.probe._detect import DETECTORS
from airlock.probe._render import render_html, render_sarif, render_text
from airlock.probe._report import SCHEMA, baseline_rates, current_rates, report_json
from airlock.probe._run import Budget, RunResult, Settings, probe
from airlock.probe._stats import Rate, Regression, compare, wilson

__all__ = [
    "DETECTORS",
    "FAMILIES",
    "SCHEMA",
    "Budget",
    "ChatClient",
    "Rate",
    "Regression",
    "RunResult",
    "Settings",
    "Target",
    "baseline_rates",
    "catalogue",
    "compare",
    "current_rates",
    "probe",
    "read_api_key",
    "render_html",
    "render_sarif",
    "render_text",
    "report_json",
    "wilson",
]
