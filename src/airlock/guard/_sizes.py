"""Size limits, checked before any other work: bytes before decoding, characters before any step,
lines last (counting them is linear, and the character limit already bounds that)."""

from __future__ import annotations

from dataclasses import dataclass

from airlock.errors import UsageError
from airlock.guard._types import Action, GuardFinding, Span

__all__ = ["SizeLimits", "check_sizes", "count_lines"]

STEP = "validate"


@dataclass(frozen=True, slots=True)
class SizeLimits:
    """The largest text the guard accepts; anything larger is BLOCKED before any step runs.

    ``max_chars``: code points (default 100,000, about 25k tokens). ``max_bytes``: its UTF-8
    encoding (default 400,000). ``max_lines``: lines (default 10,000; a text ending in a newline
    does not start another one).
    """

    max_chars: int = 100_000
    max_bytes: int = 400_000
    max_lines: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_bytes", "max_lines"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"SizeLimits.{name} must be a positive integer, got {value!r}")


def count_lines(text: str) -> int:
    if not text:
        return 0
    breaks = text.count("\n")
    return breaks if text.endswith("\n") else breaks + 1


def _refuse(rule: str, reason: str, span: Span) -> GuardFinding:
    return GuardFinding(STEP, rule, reason, Action.BLOCK, span)


def check_sizes(data: str | bytes, limits: SizeLimits) -> GuardFinding | None:
    """The finding that refuses ``data``, or None when it is within ``limits`` (and valid UTF-8)."""
    if isinstance(data, bytes):
        if len(data) > limits.max_bytes:
            return _refuse("size.bytes", f"{len(data)} bytes exceed max_bytes {limits.max_bytes}", Span(0, 0))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = len(data[: exc.start].decode("utf-8", errors="replace"))
            return _refuse("size.utf8", f"not valid UTF-8 at byte {exc.start}", Span(at, at))
    else:
        text = data
    if len(text) > limits.max_chars:
        return _refuse(
            "size.chars",
            f"{len(text)} characters exceed max_chars {limits.max_chars}",
            Span(limits.max_chars, len(text)),
        )
    if isinstance(data, str):  # always: a lone surrogate has no UTF-8 form and is refused
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 form at all
            return _refuse(
                "size.utf8", f"lone surrogate U+{ord(text[exc.start]):04X}", Span(exc.start, exc.end)
            )
        if size > limits.max_bytes:
            return _refuse(
                "size.bytes", f"{size} bytes (UTF-8) exceed max_bytes {limits.max_bytes}", Span(0, len(text))
            )
    lines = count_lines(text)
    if lines > limits.max_lines:
        at = -1
        for _ in range(limits.max_lines):
            at = text.index("\n", at + 1)
        return _refuse(
            "size.lines", f"{lines} lines exceed max_lines {limits.max_lines}", Span(at + 1, len(text))
        )
    return None
