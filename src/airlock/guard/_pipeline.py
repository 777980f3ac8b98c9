"""The guard pipeline: size limits first (before any work), then each step in order on the text the
previous steps left; findings are mapped back to the original text; the first BLOCK stops it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from airlock.errors import UsageError
from airlock.guard._encode import EncodeConfig, EncodeStep
from airlock.guard._filter import FilterConfig, FilterStep
from airlock.guard._injection_step import InjectionConfig, InjectionStep
from airlock.guard._offsets import OffsetMap, non_overlapping
from airlock.guard._pii import PIIConfig, PIIStep
from airlock.guard._sizes import SizeLimits, check_sizes
from airlock.guard._step import Step
from airlock.guard._types import Action, Edit, GuardFinding, GuardResult, Pseudonyms, decide
from airlock.guard._unicode import ConfusablesStep, NFKCStep, UnicodeConfig, UnicodeStep
from airlock.guard._validate import ValidationConfig, ValidationStep

__all__ = ["Guard", "GuardConfig", "build_steps"]


@dataclass(frozen=True)
class GuardConfig:
    """Everything the guard does, explicit and immutable (nothing is read from the environment or
    the current directory). A step set to ``None`` does not run; size limits always apply.

    The defaults: limits of :class:`SizeLimits`; Unicode cleaning (invisible, bidi, tag and control
    characters removed, NFKC, homoglyphs in mixed-script words rewritten to Latin); no character
    class or JSON schema restriction; script/markup and exfiltration links removed; PII (email,
    phone, credit card, IBAN, IP) redacted with Presidio's regex recognisers; no sink encoding; no
    prompt-injection detection unless ``injection`` is given (opt in: docs/guard.md says why).
    """

    limits: SizeLimits = field(default_factory=SizeLimits)
    unicode: UnicodeConfig | None = field(default_factory=UnicodeConfig)
    validation: ValidationConfig | None = None
    filter: FilterConfig | None = field(default_factory=FilterConfig)
    pii: PIIConfig | None = field(default_factory=PIIConfig)
    encode: EncodeConfig | None = None
    #: off by default while the detector flags some short benign texts (docs/guard.md); opt in
    injection: InjectionConfig | None = None

    def __post_init__(self) -> None:
        for name, kind in (
            ("limits", SizeLimits),
            ("unicode", UnicodeConfig),
            ("validation", ValidationConfig),
            ("filter", FilterConfig),
            ("pii", PIIConfig),
            ("encode", EncodeConfig),
            ("injection", InjectionConfig),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise UsageError(f"GuardConfig.{name} must be a {kind.__name__}, got {type(value).__name__}")


def build_steps(config: GuardConfig) -> list[Step]:
    """The steps ``config`` asks for, in pipeline order: unicode, nfkc, confusables, validate,
    filter, injection, pii, encode. (``injection`` sees the text the user wrote, with PII still in
    place, but after hidden characters and markup are gone.)
    """
    steps: list[Step] = []
    if config.unicode is not None:
        steps.append(UnicodeStep(config.unicode))
        if config.unicode.nfkc:
            steps.append(NFKCStep())
        if config.unicode.homoglyphs is not None or config.unicode.whole_script_homoglyphs is not None:
            steps.append(ConfusablesStep(config.unicode))
    if config.validation is not None:
        steps.append(ValidationStep(config.validation))
    if config.filter is not None:
        steps.append(FilterStep(config.filter))
    if config.injection is not None:
        steps.append(InjectionStep(config.injection))
    if config.pii is not None:
        steps.append(PIIStep(config.pii))
    if config.encode is not None:
        steps.append(EncodeStep(config.encode))
    return steps


class Guard:
    """A configured pipeline; build once, call :meth:`check` per text (thread-safe: steps keep no
    per-text state).

    ``steps`` replaces the steps built from ``config`` (size limits still come from ``config``):
    the way to add a step of your own, for example ``[*build_steps(config), my_step]``.
    """

    def __init__(self, config: GuardConfig | None = None, *, steps: Sequence[Step] | None = None) -> None:
        self.config = config if config is not None else GuardConfig()
        self.steps: tuple[Step, ...] = tuple(build_steps(self.config) if steps is None else steps)
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise UsageError(f"guard step names must be unique, got {names}")

    def check(self, data: str | bytes) -> GuardResult:
        """Run the pipeline on ``data`` (bytes must be UTF-8). Never raises for what the text
        holds: oversized or undecodable input is a BLOCKED result."""
        if not isinstance(data, (str, bytes)):
            raise UsageError(f"Guard.check takes str or bytes, got {type(data).__name__}")
        names = tuple(s.name for s in self.steps)
        refused = check_sizes(data, self.config.limits)
        if refused is not None:
            return GuardResult(decide({Action.BLOCK}), None, (refused,), names)
        text = data if isinstance(data, str) else data.decode("utf-8")  # check_sizes proved it decodes
        offsets = OffsetMap(len(text))
        findings: list[GuardFinding] = []
        actions: set[Action] = set()
        pseudonyms: dict[str, str] = {}
        for step in self.steps:
            report = step.check(text)
            rewrites = list(report.edits)
            for hit in report.hits:
                findings.append(
                    GuardFinding(
                        step.name, hit.rule, hit.reason, hit.action, offsets.span(hit.start, hit.end)
                    )
                )
                actions.add(hit.action)
                if hit.action is Action.REDACT:
                    rewrites.append(Edit(hit.start, hit.end, hit.replacement))
            if Action.BLOCK in actions:
                return GuardResult(decide(actions), None, tuple(findings), names)
            pseudonyms.update(report.pseudonyms)
            text = offsets.rewrite(text, non_overlapping(rewrites))
        return GuardResult(decide(actions), text, tuple(findings), names, Pseudonyms(pseudonyms))
