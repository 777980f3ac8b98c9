"""The interface every guard step implements (one module per step, registered in
:func:`airlock.guard._pipeline.build_steps`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from airlock.guard._types import Edit, Hit

__all__ = ["Step", "StepReport"]


@dataclass(frozen=True, slots=True)
class StepReport:
    """What one step found in the text it was given (positions in THAT text).

    ``hits`` are findings; a REDACT hit also rewrites its span. ``edits`` are rewrites that are not
    findings (normalisation, sink encoding). ``pseudonyms`` is the reversible mapping a PII step
    handed out (pseudonym -> original value), empty otherwise.
    """

    hits: tuple[Hit, ...] = ()
    edits: tuple[Edit, ...] = ()
    pseudonyms: Mapping[str, str] = field(default_factory=dict)


EMPTY = StepReport()


class Step(Protocol):
    """A named, configured check. ``check`` must be bounded in time by the text's length (the size
    limits are enforced before any step runs), must not log or keep the text, and raises only
    :class:`~airlock.errors.AirlockError` for failures of its own."""

    @property
    def name(self) -> str: ...

    def check(self, text: str) -> StepReport: ...
