"""Where each character of a rewritten text came from, so that every finding's span points into
the ORIGINAL text however many steps rewrote it before.

For each character of the current text the map holds the original span it stands for: an
untouched character its own position, a character that a rewrite produced the whole span the
rewrite replaced. The map costs nothing until the first rewrite (identity).
"""

from __future__ import annotations

from collections.abc import Sequence

from airlock.guard._types import Edit, Span

__all__ = ["OffsetMap", "apply_edits", "non_overlapping"]


class OffsetMap:
    __slots__ = ("_ends", "_starts", "total")

    def __init__(self, total: int) -> None:
        #: length of the original text
        self.total = total
        self._starts: list[int] | None = None  # None: identity
        self._ends: list[int] | None = None

    def span(self, start: int, end: int) -> Span:
        """The original span of characters ``start``..``end`` of the current text."""
        if self._starts is None or self._ends is None:
            return Span(start, end)
        if start >= len(self._starts):
            return Span(self.total, self.total)
        if start == end:
            return Span(self._starts[start], self._starts[start])
        return Span(self._starts[start], self._ends[end - 1])

    def rewrite(self, text: str, edits: Sequence[Edit]) -> str:
        """Apply ``edits`` (sorted, non-overlapping, in ``text``'s positions); return the new text
        and update the map to it."""
        if not edits:
            return text
        if self._starts is None or self._ends is None:
            self._starts = list(range(len(text)))
            self._ends = list(range(1, len(text) + 1))
        starts, ends = self._starts, self._ends
        pieces: list[str] = []
        new_starts: list[int] = []
        new_ends: list[int] = []
        at = 0
        for edit in edits:
            pieces.append(text[at : edit.start])
            new_starts.extend(starts[at : edit.start])
            new_ends.extend(ends[at : edit.start])
            if edit.replacement:
                if edit.start < edit.end:
                    origin = (starts[edit.start], ends[edit.end - 1])
                else:
                    here = starts[edit.start] if edit.start < len(starts) else self.total
                    origin = (here, here)
                pieces.append(edit.replacement)
                new_starts.extend([origin[0]] * len(edit.replacement))
                new_ends.extend([origin[1]] * len(edit.replacement))
            at = edit.end
        pieces.append(text[at:])
        new_starts.extend(starts[at:])
        new_ends.extend(ends[at:])
        self._starts, self._ends = new_starts, new_ends
        return "".join(pieces)


def non_overlapping(edits: Sequence[Edit]) -> list[Edit]:
    """``edits`` sorted by position; an edit overlapping an earlier (or longer, same-start) one is
    dropped: the outer rewrite wins."""
    kept: list[Edit] = []
    for edit in sorted(edits, key=lambda e: (e.start, -(e.end - e.start))):
        if kept and edit.start < kept[-1].end:
            continue
        kept.append(edit)
    return kept


def apply_edits(text: str, edits: Sequence[Edit]) -> str:
    """``text`` with ``edits`` applied (no map kept)."""
    return OffsetMap(len(text)).rewrite(text, non_overlapping(edits))
