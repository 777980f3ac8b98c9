"""The guard's result types: what a step reports (:class:`Hit`, in the text the step saw) and what
the pipeline returns (:class:`GuardFinding` with spans in the ORIGINAL text, :class:`GuardResult`).

No type here holds the input text except :attr:`GuardResult.text` (the output) and the
pseudonym mapping, which is kept out of ``repr`` so that logging a result never logs personal data.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

__all__ = ["Action", "Decision", "Edit", "GuardFinding", "GuardResult", "Hit", "Pseudonyms", "Span"]


class Action(enum.Enum):
    """What a step does with what it found.

    ``BLOCK``: refuse the whole text (decision BLOCKED, no output text). ``REDACT``: remove or
    rewrite the offending span (decision REDACTED). ``FLAG``: keep the text as it is, report the
    finding (decision FLAGGED).
    """

    BLOCK = "block"
    REDACT = "redact"
    FLAG = "flag"


class Decision(enum.Enum):
    """The overall outcome, most severe first. Exit codes of ``airlock guard``: :attr:`exit_code`."""

    BLOCKED = "blocked"
    REDACTED = "redacted"
    FLAGGED = "flagged"
    ALLOWED = "allowed"

    @property
    def exit_code(self) -> int:
        """0 allowed, 1 blocked, 3 redacted or flagged (2 is reserved for errors and usage)."""
        return _EXIT[self]


_EXIT: Final = {Decision.ALLOWED: 0, Decision.BLOCKED: 1, Decision.REDACTED: 3, Decision.FLAGGED: 3}


@dataclass(frozen=True, slots=True)
class Span:
    """Characters ``start`` (inclusive) to ``end`` (exclusive) of the original text (Python ``str``
    indices, that is code points)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"span {self.start}..{self.end} is not ordered")


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace characters ``start``..``end`` of the step's input with ``replacement`` (a rewrite
    that is not itself a finding: NFKC normalisation, sink encoding)."""

    start: int
    end: int
    replacement: str


@dataclass(frozen=True, slots=True)
class Hit:
    """One thing a step found, in the text it was given.

    ``replacement`` is what the span becomes when ``action`` is REDACT (``""`` removes it).
    ``reason`` never quotes the input text: it names code points, tags, entity types or counts.
    """

    rule: str
    reason: str
    start: int
    end: int
    action: Action
    replacement: str = ""


@dataclass(frozen=True, slots=True)
class GuardFinding:
    """A finding of the pipeline: which ``step`` and ``rule``, why, what was done, and where in
    the ORIGINAL text (a span that a step saw after earlier rewrites is mapped back)."""

    step: str
    rule: str
    reason: str
    action: Action
    span: Span

    def to_json(self) -> dict[str, object]:
        return {
            "step": self.step,
            "rule": self.rule,
            "reason": self.reason,
            "action": self.action.value,
            "start": self.span.start,
            "end": self.span.end,
        }


#: the shape of a pseudonym the guard makes (``<EMAIL_ADDRESS_1>``)
_PSEUDONYM_SHAPE: Final = re.compile(r"<[A-Za-z][A-Za-z0-9_]*_[0-9]+>")


@dataclass(frozen=True)
class Pseudonyms:
    """The per-request mapping of reversible pseudonymisation: pseudonym -> original value.

    Held only in memory for one request; its ``repr`` shows the count, never the values, so a log
    line or a traceback that prints it leaks nothing. :meth:`restore` puts the originals back into a
    response.
    """

    _mapping: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Pseudonyms({len(self._mapping)} values)"

    def __len__(self) -> int:
        return len(self._mapping)

    @property
    def pseudonyms(self) -> tuple[str, ...]:
        """The pseudonyms handed out (not the values they stand for)."""
        return tuple(self._mapping)

    def restore(self, text: str) -> str:
        """``text`` with each pseudonym of this request replaced by the value it stands for. One
        pass over ``text`` whatever the number of pseudonyms (an input of thousands of distinct
        values must not make each answer cost thousands of comparisons a character)."""
        if not self._mapping:
            return text
        mapping = self._mapping
        return self._pattern.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        """Made once per mapping (a check over every pseudonym each call would be quadratic)."""
        if all(_PSEUDONYM_SHAPE.fullmatch(p) for p in self._mapping):
            return _PSEUDONYM_SHAPE
        # not made by the guard (<ENTITY_n>): the pseudonyms themselves, longest first
        return re.compile("|".join(re.escape(p) for p in sorted(self._mapping, key=len, reverse=True)))

    def restore_all(self, texts: Sequence[str]) -> list[str]:
        """:meth:`restore` on each of ``texts``."""
        if not self._mapping:
            return list(texts)
        mapping, pattern = self._mapping, self._pattern
        return [pattern.sub(lambda m: mapping.get(m.group(0), m.group(0)), text) for text in texts]


@dataclass(frozen=True)
class GuardResult:
    """What :meth:`airlock.guard.Guard.check` returns.

    ``text`` is the output (rewritten, redacted and encoded for the sink), or ``None`` when the
    decision is BLOCKED. ``findings`` are in pipeline order; ``steps`` names the steps that ran.
    """

    decision: Decision
    text: str | None
    findings: tuple[GuardFinding, ...]
    steps: tuple[str, ...]
    pseudonyms: Pseudonyms = field(default_factory=Pseudonyms, repr=False)

    @property
    def exit_code(self) -> int:
        return self.decision.exit_code

    @property
    def blocked(self) -> bool:
        return self.decision is Decision.BLOCKED

    def to_audit(self) -> dict[str, object]:
        """What an audit log or a metric may keep: the decision and, per finding, step, rule, action
        and span; never the text, the output or a reason."""
        return {
            "decision": self.decision.value,
            "findings": [
                {
                    "step": f.step,
                    "rule": f.rule,
                    "action": f.action.value,
                    "start": f.span.start,
                    "end": f.span.end,
                }
                for f in self.findings
            ],
        }

    def to_json(self) -> dict[str, object]:
        """The stable machine form (``airlock guard --format json``); the pseudonym mapping is never
        part of it."""
        return {
            "decision": self.decision.value,
            "exit_code": self.exit_code,
            "text": self.text,
            "steps": list(self.steps),
            "findings": [f.to_json() for f in self.findings],
        }


def decide(actions: set[Action]) -> Decision:
    """The decision for the actions taken: block beats redact beats flag."""
    if Action.BLOCK in actions:
        return Decision.BLOCKED
    if Action.REDACT in actions:
        return Decision.REDACTED
    if Action.FLAG in actions:
        return Decision.FLAGGED
    return Decision.ALLOWED
