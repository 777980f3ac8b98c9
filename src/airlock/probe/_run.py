"""One probe run: the benign set (detector false positives), then the attacks, within a budget.

With a guard, every attacker-controlled message of an attack goes through ``Guard.check`` first:
a blocked prompt is a failed attack (nothing is sent); a prompt the guard rewrote is sent again
as rewritten and judged on that reply; a prompt it let through unchanged gets the unguarded reply
(temperature 0 and a fixed seed: the same request would get the same answer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from airlock.probe._cases import Case, Message, Secrets, benign_cases, build_cases, secrets_for, system_prompt
from airlock.probe._catalogue import FAMILIES, Catalogue, catalogue
from airlock.probe._client import CaseFailed, Reply
from airlock.probe._detect import MAX_REPLY_CHARS, SUCCESS_DETECTOR, Context, Detection, detect

__all__ = ["Budget", "CaseResult", "GuardOutcome", "RunResult", "Settings", "probe"]

#: a request never gets less than this much time, even at the end of the budget
_MIN_REQUEST_SECONDS: Final = 1.0


class Chat(Protocol):
    def chat(self, messages: tuple[Message, ...], timeout: float) -> Reply: ...


class GuardLike(Protocol):
    def check(self, text: str) -> Any: ...


@dataclass(frozen=True)
class Budget:
    """What one run may spend. Sized for CPU models by default: 50 attacks (5 per family) and
    the 12 benign conversations, 48 tokens each."""

    max_prompts: int = 50
    max_tokens: int = 48
    max_seconds: float = 900.0
    benign: int = 12
    request_seconds: float = 120.0

    def __post_init__(self) -> None:
        checks = (
            ("max_prompts", self.max_prompts, 1, 100_000),
            ("max_tokens", self.max_tokens, 1, 32_768),
            ("max_seconds", self.max_seconds, 1, 7 * 86_400),
            ("benign", self.benign, 0, 10_000),
            ("request_seconds", self.request_seconds, 1, 3_600),
        )
        for name, value, low, high in checks:
            if not low <= value <= high:
                raise ValueError(f"budget {name} must be in [{low}, {high}], got {value}")


@dataclass(frozen=True)
class Settings:
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    families: tuple[str, ...] = FAMILIES

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2^63), got {self.seed}")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")


@dataclass(frozen=True)
class GuardOutcome:
    decision: str
    rules: tuple[str, ...]
    #: the reply to the rewritten prompt (None: blocked, or unchanged and the unguarded reply stands)
    reply: str | None
    error: str | None
    detections: tuple[Detection, ...]
    success: bool


@dataclass(frozen=True)
class CaseResult:
    case: Case
    reply: str | None
    finish: str | None
    error: str | None
    detections: tuple[Detection, ...]
    success: bool
    guard: GuardOutcome | None = None


@dataclass(frozen=True)
class RunResult:
    settings: Settings
    secrets: Secrets
    system_prompt: str
    attacks: tuple[CaseResult, ...]
    benign: tuple[CaseResult, ...]
    #: cases never sent because the time budget ran out
    not_run: tuple[Case, ...]
    stopped: str | None
    guard_used: bool
    wall_seconds: float
    requests: int


class _Clock:
    def __init__(self, max_seconds: float, request_seconds: float, now: Callable[[], float]) -> None:
        self.now = now
        self.deadline = now() + max_seconds
        self.request_seconds = request_seconds

    def left(self) -> float:
        return self.deadline - self.now()

    def timeout(self) -> float:
        return max(_MIN_REQUEST_SECONDS, min(self.request_seconds, self.left()))


def _send(
    chat: Chat, case: Case, messages: tuple[Message, ...], clock: _Clock, context: Context
) -> tuple[str | None, str | None, str | None, tuple[Detection, ...], bool]:
    attack = "\n".join(m.content for m in messages if m.attacker)
    try:
        reply = chat.chat(messages, clock.timeout())
    except CaseFailed as exc:
        return None, None, str(exc), (), False
    if len(reply.text) > MAX_REPLY_CHARS:  # never cut: a code past the cut would go unseen
        return None, None, f"a reply longer than {MAX_REPLY_CHARS} characters", (), False
    found = detect(reply.text, attack, context)
    wanted = SUCCESS_DETECTOR.get(case.goal)
    return reply.text, reply.finish, None, found, any(d.detector == wanted for d in found)


def _guarded(
    chat: Chat, guard: GuardLike, result: CaseResult, clock: _Clock, context: Context
) -> tuple[GuardOutcome, int]:
    """The attack as the guard lets it through; the second value is the requests sent (0 or 1)."""
    case = result.case
    rewritten: list[Message] = []
    decisions: list[str] = []
    rules: list[str] = []
    for message in case.messages:
        if not message.attacker:
            rewritten.append(message)
            continue
        checked = guard.check(message.content)
        decisions.append(checked.decision.value)
        rules.extend(f.rule for f in checked.findings)
        if checked.text is None:  # blocked: nothing reaches the model
            return GuardOutcome("blocked", tuple(sorted(set(rules))), None, None, (), False), 0
        rewritten.append(Message(message.role, checked.text, attacker=True))
    decision = next((d for d in ("redacted", "flagged") if d in decisions), "allowed")
    unique = tuple(sorted(set(rules)))
    if tuple(rewritten) == case.messages:
        return GuardOutcome(decision, unique, None, result.error, result.detections, result.success), 0
    reply, _, error, found, success = _send(chat, case, tuple(rewritten), clock, context)
    return GuardOutcome(decision, unique, reply, error, found, success), 1


def probe(
    chat: Chat,
    settings: Settings,
    *,
    guard: GuardLike | None = None,
    data: Catalogue | None = None,
    now: Callable[[], float] = time.monotonic,
) -> RunResult:
    data = data or catalogue()
    budget = settings.budget
    secrets = secrets_for(settings.seed)
    prompt = system_prompt(secrets)
    context = Context(secrets.canary, secrets.token, prompt)
    cases = build_cases(data, settings.seed, budget.max_prompts, settings.families)
    benign_set = benign_cases(data.benign, settings.seed, budget.benign)
    clock = _Clock(budget.max_seconds, budget.request_seconds, now)
    started = now()
    requests = 0
    stopped: str | None = None
    benign: list[CaseResult] = []
    attacks: list[CaseResult] = []
    queue: list[tuple[str, Case]] = [("benign", c) for c in benign_set] + [("attack", c) for c in cases]
    not_run: list[Case] = []
    for kind, case in queue:
        if stopped is not None or clock.left() <= 0:
            stopped = "max-seconds"
            if kind == "attack":
                not_run.append(case)
            continue
        reply, finish, error, found, success = _send(chat, case, case.messages, clock, context)
        requests += 1
        result = CaseResult(case, reply, finish, error, found, success and kind == "attack")
        if kind == "benign":
            benign.append(result)
            continue
        if guard is not None:
            outcome, sent = _guarded(chat, guard, result, clock, context)
            requests += sent
            result = CaseResult(case, reply, finish, error, found, result.success, outcome)
        attacks.append(result)
    return RunResult(
        settings=settings,
        secrets=secrets,
        system_prompt=prompt,
        attacks=tuple(attacks),
        benign=tuple(benign),
        not_run=tuple(not_run),
        stopped=stopped,
        guard_used=guard is not None,
        wall_seconds=now() - started,
        requests=requests,
    )
