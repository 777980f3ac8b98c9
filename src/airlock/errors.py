"""The exception tree. Every error airlock raises on purpose derives from :class:`AirlockError`.

::

    AirlockError
    ├── UsageError        bad arguments or configuration given by the caller
    ├── FormatError       input bytes that do not parse as the format they claim to be
    │   └── LimitError    input that exceeds a documented limit (size, count, depth, time)
    ├── PolicyError       input that parses but holds something the policy does not allow
    ├── IntegrityError    an artifact that does not match its manifest, lock file or signature
    └── SandboxError      the sandbox could not be set up, or a sandboxed worker failed

Third-party errors are wrapped with ``raise ... from exc`` so callers only ever need to catch
``AirlockError``; anything else escaping is a bug in airlock and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "AirlockError",
    "FormatError",
    "IntegrityError",
    "LimitError",
    "ModelError",
    "PolicyError",
    "SandboxError",
    "UsageError",
]


class AirlockError(Exception):
    """Root of every error airlock raises on purpose."""


class UsageError(AirlockError):
    """The caller asked for something that cannot be done as asked (flags, paths, configuration)."""


class FormatError(AirlockError):
    """Input that does not parse. ``offset`` is the byte offset where parsing stopped, when known."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class LimitError(FormatError):
    """Input that exceeds a documented limit; raised before the offending allocation happens."""


class PolicyError(AirlockError):
    """Input that parses but holds something the active policy does not allow."""


class IntegrityError(AirlockError):
    """An artifact that does not match its manifest, lock file or signature."""


class SandboxError(AirlockError):
    """The sandbox could not be set up as required, or a sandboxed worker failed."""


class ModelError(SandboxError):
    """The sandboxed model raised an error for one request; its worker answered and is intact."""
