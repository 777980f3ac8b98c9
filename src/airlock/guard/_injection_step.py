"""The ``injection`` step: the prompt-injection detector of :mod:`._injection` as a pipeline step.

It sees the text after hidden characters, NFKC and homoglyphs are handled and markup is filtered,
with personal data still in place (the step runs before ``pii``). A flagged text is one finding
over the whole text; its reason names the score, the threshold and the attack structures that
matched — never the words of the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from airlock.errors import UsageError
from airlock.guard._injection import detector
from airlock.guard._step import EMPTY, StepReport
from airlock.guard._types import Action, Hit

__all__ = ["InjectionConfig", "InjectionStep"]

RULE: Final = "injection.detected"


@dataclass(frozen=True)
class InjectionConfig:
    """``action``: block or flag (an injection has no part to redact). The step itself is opt-in
    (``GuardConfig.injection`` is None by default): docs/guard.md gives the detector's measured
    false positives."""

    action: Action = Action.FLAG

    def __post_init__(self) -> None:
        if self.action not in (Action.BLOCK, Action.FLAG):
            raise UsageError(f"InjectionConfig.action must be block or flag, got {self.action.value}")


class InjectionStep:
    name = "injection"

    def __init__(self, config: InjectionConfig) -> None:
        self.config = config
        self._detector = detector()  # loaded (and checked) once, when the pipeline is built

    def check(self, text: str) -> StepReport:
        if not text:
            return EMPTY
        result = self._detector.score(text)
        if not result.flagged:
            return EMPTY
        # the detector's reasons name structures ("override verb near instruction words") or
        # n-grams of the text ('words "all"'): only the structures leave the step
        structures = [r for r in result.reasons if not r.startswith(("words ", "chars "))]
        why = f"prompt-injection score {result.score:.2f} >= {result.threshold:.2f}"
        if structures:
            why += ": " + "; ".join(structures)
        return StepReport(hits=(Hit(RULE, why, 0, len(text), self.config.action),))
