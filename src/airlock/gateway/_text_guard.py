"""The guard on the OpenAI-compatible text endpoints: a text model's ``[models.X.guard]`` policy
(:mod:`._guard_policy`) applied to every message content / prompt before the worker sees it, and to
the model's answer before the caller does (docs/serve.md, "Guarding text").

Guard work is CPU in Python: a request's texts are checked on the event loop only while their
worst-case work is small (:func:`guard_work` x :data:`GUARD_COST` <= ``[server] offload_bytes``,
the bound JSON parsing uses: a dozen characters by default); more go to the tenant's own codec
process (:mod:`._codec`), so they queue behind that tenant's work only. The cost is that of the
slowest content measured (an attacker picks the content), and counts every text's fixed cost
(:data:`TEXT_COST`): a body holds hundreds of thousands of empty messages or elements. The guard's size limits are checked first, wherever the
texts are checked, before any guard work, for each text and for the request's texts together.

What is kept of a decision (audit row, metrics, logs): direction, decision and rule ids with
counts (:class:`GuardTrail`). Never the text, a span's content, a canary, or a pseudonym's value.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from airlock.gateway._app import CODEC_UNAVAILABLE, GatewayState, _error, _Refused
from airlock.gateway._codec import CodecUnavailable
from airlock.gateway._guard_policy import GuardPolicy, canonical
from airlock.gateway._guard_trail import GuardTrail, Outcome
from airlock.guard import Decision, Guard, GuardConfig, Pseudonyms
from airlock.guard._sizes import SizeLimits, check_sizes, count_lines

if TYPE_CHECKING:
    from airlock.gateway._openai import TextRequest

__all__ = [
    "GUARD_COST", "INPUT_REFUSED", "OUTPUT_REFUSED", "TEXT_COST", "GuardTrail", "Outcome", "built_guards", "check_input",
    "check_output", "guard_input", "guard_output", "guard_work", "screen_input", "screen_output", "warm_guards",
]  # fmt: skip

#: guard work per character, in units of JSON parsing per byte (~10 ns), for the WORST content, not
#: typical text: plain English costs ~0.2-0.6 us a character, but text the pipeline works hard on
#: (Cyrillic look-alikes, phone numbers, IP addresses, IBANs, markdown brackets) ~10-40 us a character
#: (measured, warm, default and full policies). The loop's share must hold for what an attacker sends.
GUARD_COST: Final = 4096
#: guard work of one text whatever its length, in those characters (measured: ~40-90 us for an
#: empty or one-character text)
TEXT_COST: Final = 4
#: the fixed texts of a refusal (never the text, the rule or the span)
INPUT_REFUSED: Final = "the request was refused by the input guard"
OUTPUT_REFUSED: Final = "the model's answer was withheld by the output guard"
CANARY_RULE: Final = "canary.leak"
_ORDER: Final = (Decision.BLOCKED, Decision.REDACTED, Decision.FLAGGED, Decision.ALLOWED)
_PSEUDONYM: Final = re.compile(r"<([A-Z_]+)_(\d+)>")
#: Guards built in this process (the gateway's, or a codec process's), by model and direction
_GUARDS: dict[str, tuple[GuardConfig, Guard]] = {}


def _guard(key: str, config: GuardConfig) -> Guard:
    """The Guard for ``key`` in this process, built on first use (Presidio loads once per process)."""
    known = _GUARDS.get(key)
    if known is None or known[0] != config:
        known = _GUARDS[key] = (config, Guard(config))
    return known[1]


def built_guards() -> list[str]:
    """The guards this process holds, as ``model/direction`` (a codec's warm-up is checked with it)."""
    return sorted(_GUARDS)


def warm_guards(model: str, policy: GuardPolicy) -> None:
    """Build the model's guards now (at start-up: a bad policy, e.g. a spaCy model that is not
    installed, stops the gateway instead of failing requests)."""
    for direction, config in (("input", policy.inputs), ("output", policy.outputs)):
        if config is not None:
            _guard(f"{model}/{direction}", config)


def _fresh(pseudonym: str, used: dict[str, str], written: frozenset[str] = frozenset()) -> str:
    found = _PSEUDONYM.fullmatch(pseudonym)
    entity, number = (found.group(1), int(found.group(2))) if found else ("PII", 1)
    while f"<{entity}_{number}>" in used or f"<{entity}_{number}>" in written:
        number += 1
    return f"<{entity}_{number}>"


def _merge(
    text: str,
    mapping: dict[str, str],
    used: dict[str, str],
    by_value: dict[str, str],
    written: frozenset[str] = frozenset(),
) -> str:
    """One text's pseudonyms joined to the request's: a value seen in an earlier text keeps its
    pseudonym, a pseudonym taken by another value or ``written`` by the sender in any text of the
    request is renumbered (each text is checked alone; a sender's ``<EMAIL_ADDRESS_1>`` in one
    message must not come back from restore as the address found in another: outside review 14)."""
    renames: dict[str, str] = {}
    for pseudonym, value in mapping.items():
        taken = pseudonym in used or pseudonym in written
        target = by_value.get(value) or (_fresh(pseudonym, used, written) if taken else pseudonym)
        used[target], by_value[value] = value, target
        if target != pseudonym:
            renames[pseudonym] = target
    if not renames:
        return text
    pattern = re.compile("|".join(re.escape(p) for p in sorted(renames, key=len, reverse=True)))
    return pattern.sub(lambda m: renames[m.group(0)], text)


def _worst(decisions: list[str]) -> str:
    return next((d.value for d in _ORDER if d.value in decisions), Decision.ALLOWED.value)


def check_input(key: str, config: GuardConfig, texts: list[str]) -> Outcome:
    """Every text through the guard (here or in a codec process); the first blocked text blocks."""
    guard = _guard(key, config)
    rules: Counter[str] = Counter()
    decisions: list[str] = []
    out: list[str] = []
    used: dict[str, str] = {}
    by_value: dict[str, str] = {}
    written = frozenset(m.group(0) for text in texts for m in _PSEUDONYM.finditer(text))
    for text in texts:
        result = guard.check(text)
        rules.update(f.rule for f in result.findings)
        decisions.append(result.decision.value)
        if result.text is None:
            return Outcome(Decision.BLOCKED.value, None, dict(rules))
        mapping = {p: result.pseudonyms.restore(p) for p in result.pseudonyms.pseudonyms}
        out.append(_merge(result.text, mapping, used, by_value, written))
    return Outcome(_worst(decisions), out, dict(rules), used)


def check_output(key: str, config: GuardConfig | None, canaries: tuple[str, ...], text: str) -> Outcome:
    """The model's answer: canaries first (on the answer as the model wrote it), then the guard."""
    if canaries:
        form = canonical(text)
        if any(canary in form for canary in canaries):
            return Outcome(Decision.BLOCKED.value, None, {CANARY_RULE: 1})
    if config is None:
        return Outcome(Decision.ALLOWED.value, [text], {})
    return check_input(key, config, [text])


def _oversized(texts: list[str], limits: SizeLimits) -> Outcome | None:
    """The size refusal of ``texts``, each and together, before any guard work (else None)."""
    for text in texts:
        refused = check_sizes(text, limits)
        if refused is not None:
            return Outcome(Decision.BLOCKED.value, None, {refused.rule: 1})
    chars = sum(len(t) for t in texts)
    size = sum(len(t.encode("utf-8")) for t in texts)  # check_sizes proved each encodes
    lines = sum(count_lines(t) for t in texts)
    for rule, value, limit in (
        ("size.chars", chars, limits.max_chars),
        ("size.bytes", size, limits.max_bytes),
        ("size.lines", lines, limits.max_lines),
    ):
        if value > limit:
            return Outcome(Decision.BLOCKED.value, None, {rule: 1})
    return None


def guard_work(count: int, chars: int) -> int:
    """The guard work of ``count`` texts of ``chars`` characters together, in characters."""
    return chars + count * TEXT_COST


def on_loop(offload_bytes: int, texts: Sequence[str | bytes]) -> bool:
    """Whether checking ``texts`` (or UTF-8 elements) is cheap enough for the event loop at worst
    (``offload_bytes``: the server's bound on loop work, in JSON bytes; the count is looked at
    first: summing a huge list's lengths is itself work)."""
    budget = offload_bytes // GUARD_COST
    if len(texts) * TEXT_COST > budget:
        return False
    return guard_work(len(texts), sum(map(len, texts))) <= budget


def screen_input(key: str, config: GuardConfig, texts: list[str]) -> Outcome:
    """The size limits (each text and all together), then :func:`check_input`."""
    return _oversized(texts, config.limits) or check_input(key, config, texts)


def screen_output(key: str, config: GuardConfig | None, canaries: tuple[str, ...], text: str) -> Outcome:
    """The output size limits, then :func:`check_output`."""
    refused = None if config is None else _oversized([text], config.limits)
    return refused or check_output(key, config, canaries, text)


async def _run(state: GatewayState, tenant: str, loop: bool, deadline: float, fn: Any, *args: Any) -> Outcome:
    """``fn(*args)`` on the event loop when ``loop`` (:func:`on_loop`), else in the tenant's codec
    process."""
    if loop:
        result: Outcome = fn(*args)
        return result
    try:
        result = await state.codecs.run(tenant, deadline, fn, *args)
    except TimeoutError:
        raise _Refused(_error(504), "failed:timeout") from None
    except CodecUnavailable:
        raise _Refused(_error(503, text=CODEC_UNAVAILABLE), "failed:codec") from None
    return result


def _count(state: GatewayState, model: str, direction: str, outcome: Outcome, trail: GuardTrail) -> None:
    trail.add(direction, outcome)
    metrics = state.metrics
    metrics.child(metrics.guard_decisions, model, direction, outcome.decision).inc()
    for rule, count in outcome.rules.items():
        metrics.child(metrics.guard_findings, model, direction, rule).inc(count)


def _texts(generate: dict[str, Any]) -> list[str]:
    messages = generate.get("messages")
    if messages is not None:
        return [m["content"] for m in messages]
    return [generate["prompt"]]


def _replaced(generate: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    if generate.get("messages") is not None:
        messages = [{**m, "content": t} for m, t in zip(generate["messages"], texts, strict=True)]
        return {**generate, "messages": messages}
    return {**generate, "prompt": texts[0]}


async def guard_input(
    state: GatewayState, tenant: str, model: str, policy: GuardPolicy, parsed: TextRequest, deadline: float,
    trail: GuardTrail,
) -> tuple[TextRequest, Pseudonyms]:  # fmt: skip
    """``parsed`` with every message content (or the prompt) checked and rewritten, and the
    pseudonyms to restore in the answer; a blocked text refuses the request (400, fixed text)."""
    if policy.inputs is None:
        return parsed, Pseudonyms()
    texts = _texts(parsed.generate)
    outcome = await _run(
        state,
        tenant,
        on_loop(state.config.server.offload_bytes, texts),
        deadline,
        screen_input,
        f"{model}/input",
        policy.inputs,
        texts,
    )
    _count(state, model, "input", outcome, trail)
    if outcome.texts is None:
        raise _Refused(_error(400, text=INPUT_REFUSED), "denied:guard-input")
    return replace(parsed, generate=_replaced(parsed.generate, outcome.texts)), Pseudonyms(outcome.pseudonyms)


async def guard_output(
    state: GatewayState, tenant: str, model: str, policy: GuardPolicy, text: str, pseudonyms: Pseudonyms,
    deadline: float, trail: GuardTrail,
) -> str:  # fmt: skip
    """The answer as the caller may see it (checked, redacted, pseudonyms restored); a blocked
    answer raises a refusal (502, fixed text) and nothing of it is kept."""
    outcome = await _run(
        state, tenant, on_loop(state.config.server.offload_bytes, [text]), deadline, screen_output, f"{model}/output", policy.outputs,
        policy.canaries, text,
    )  # fmt: skip
    _count(state, model, "output", outcome, trail)
    if outcome.texts is None:
        raise _Refused(_error(502, text=OUTPUT_REFUSED), "denied:guard-output")
    return pseudonyms.restore(outcome.texts[0])
