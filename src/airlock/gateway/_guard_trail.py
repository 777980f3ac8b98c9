"""What one request's guard decided, per direction (input / output): the decision and rule ids with
counts, what the audit row and the metrics keep — never the text, a span's content, a canary or a
pseudonym's value. Shared by the text endpoints (:mod:`._text_guard`) and the KServe v2 BYTES
tensors (:mod:`._bytes_guard`); no dependency on the app, which imports it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GuardTrail", "Outcome"]


@dataclass
class Outcome:
    """A direction's result: the decision, the checked texts (None when blocked), rule counts; the
    pseudonym mapping (values: personal data, never in a repr)."""

    decision: str
    texts: list[str] | None
    rules: dict[str, int]
    pseudonyms: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass
class GuardTrail:
    """What one request's guard did, per direction: what the audit row and the metrics keep."""

    directions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, direction: str, outcome: Outcome) -> None:
        self.directions[direction] = {
            "decision": outcome.decision,
            "rules": dict(sorted(outcome.rules.items())),
        }

    def audit(self) -> str:
        """Canonical JSON (``{"input": {"decision": ..., "rules": {rule: count}}, "output": ...}``),
        or "" when nothing was checked."""
        if not self.directions:
            return ""
        return json.dumps(self.directions, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
