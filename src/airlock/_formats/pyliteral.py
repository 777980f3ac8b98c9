"""A small, bounded parser for Python literals (the ``.npy`` header dictionary). Never ``eval``.

Accepts what ``numpy.lib.format`` writes and ``ast.literal_eval`` would read in a header:
strings (single or double quoted, simple and octal escapes), decimal integers, ``True``/
``False``/``None``, tuples, lists and dicts. Nesting depth and text length are bounded.

The rule is *read it as ``ast.literal_eval`` does, or refuse*: every form accepted here gives the
value Python gives (``'\\01'`` is ``chr(1)``, ``(x)`` is ``x``, ``-0`` is ``0``); forms Python
reads but airlock does not need (comments, implicit string concatenation, prefixes, hex,
underscores, line continuations, duplicate dict keys — last wins in Python) are refused, and so
are forms Python refuses (NUL bytes anywhere, leading zeros such as ``007``). A refusal is a
:class:`~airlock.errors.FormatError` naming the offset.
"""

from __future__ import annotations

from typing import Final

from airlock.errors import FormatError

__all__ = ["Literal", "parse_literal"]

Literal = str | int | bool | None | tuple["Literal", ...] | list["Literal"] | dict["Literal", "Literal"]

MAX_DEPTH: Final = 32
_DIGITS: Final = frozenset("0123456789")
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_OCTAL: Final = frozenset("01234567")
_WORDS: Final[dict[str, Literal]] = {"True": True, "False": False, "None": None}


def parse_literal(text: str, max_length: int, *, py2_longs: bool = False) -> Literal:
    """The literal in ``text`` (surrounding whitespace allowed).

    ``py2_longs``: also read Python 2 long literals (``3L``, ``3 L``) as numpy does for npy format
    1.0 and 2.0 headers (``_filter_header`` drops a name token ``L`` that follows a number)."""
    if len(text) > max_length:
        raise FormatError(f"literal of {len(text)} characters exceeds {max_length}")
    if "\0" in text:
        # Python refuses source text with NUL bytes (ValueError), so numpy refuses the header.
        raise FormatError("literal holds a NUL byte", offset=text.index("\0"))
    parser = _Parser(text, py2_longs=py2_longs)
    value = parser.value(0)
    parser.skip()
    if parser.pos != len(text):
        raise FormatError(
            f"unexpected {text[parser.pos : parser.pos + 10]!r} after the literal", offset=parser.pos
        )
    return value


class _Parser:
    def __init__(self, text: str, *, py2_longs: bool = False) -> None:
        self.text = text
        self.pos = 0
        self.py2_longs = py2_longs

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def fail(self, what: str) -> FormatError:
        got = self.text[self.pos : self.pos + 10]
        return FormatError(f"{what} at offset {self.pos}, got {got!r}", offset=self.pos)

    def value(self, depth: int) -> Literal:
        if depth > MAX_DEPTH:
            raise FormatError(f"literal nested deeper than {MAX_DEPTH} levels", offset=self.pos)
        self.skip()
        if self.pos >= len(self.text):
            raise self.fail("expected a value")
        ch = self.text[self.pos]
        if ch in "'\"":
            return self.string(ch)
        if ch == "(":
            items, comma = self.sequence(")", depth)
            # ``(x)`` is just x, as in Python; ``(x,)`` is a one-tuple.
            return items[0] if len(items) == 1 and not comma else tuple(items)
        if ch == "[":
            return self.sequence("]", depth)[0]
        if ch == "{":
            return self.mapping(depth)
        if ch in _DIGITS or ch in "+-":
            return self.integer()
        for word, result in _WORDS.items():
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        raise self.fail("expected a string, integer, tuple, list, dict, True, False or None")

    def string(self, quote: str) -> str:
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                nxt = self.text[self.pos + 1 : self.pos + 2]
                if nxt and nxt in _OCTAL:
                    # \o, \oo, \ooo: up to three octal digits, as Python reads them
                    end = self.pos + 1
                    while end < self.pos + 4 and end < len(self.text) and self.text[end] in _OCTAL:
                        end += 1
                    out.append(chr(int(self.text[self.pos + 1 : end], 8)))
                    self.pos = end
                    continue
                if nxt not in _ESCAPES:
                    raise self.fail("unsupported escape in string")
                out.append(_ESCAPES[nxt])
                self.pos += 2
                continue
            if ch == "\n":
                raise self.fail("newline inside a string")
            out.append(ch)
            self.pos += 1
        raise self.fail("unterminated string")

    def integer(self) -> int:
        start = self.pos
        if self.text[self.pos] in "+-":
            self.pos += 1
        digits = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _DIGITS:
            self.pos += 1
        if self.pos == digits or self.pos - digits > 40:
            raise self.fail("expected an integer of at most 40 digits")
        if self.text[digits] == "0" and self.text[digits : self.pos].strip("0"):
            raise self.fail("leading zeros in a decimal integer (Python refuses them)")
        value_end = self.pos
        if self.pos < len(self.text) and (self.text[self.pos] in ".eExXjJ_" or self.text[self.pos].isalpha()):
            if not (self.py2_longs and self._long_suffix()):
                raise self.fail("only decimal integers are supported")
        elif self.py2_longs:
            self._long_suffix()
        return int(self.text[start:value_end])

    def _long_suffix(self) -> bool:
        """Consume spaces and a name token ``L`` after a number; False (nothing consumed) if absent."""
        at = self.pos
        while at < len(self.text) and self.text[at] in " \t":
            at += 1
        after = self.text[at + 1 : at + 2]
        if self.text[at : at + 1] != "L" or (after and (after.isalnum() or after == "_")):
            return False
        self.pos = at + 1
        return True

    def sequence(self, close: str, depth: int) -> tuple[list[Literal], bool]:
        self.pos += 1
        items: list[Literal] = []
        comma = False
        while True:
            self.skip()
            if self.text.startswith(close, self.pos):
                self.pos += 1
                return items, comma
            items.append(self.value(depth + 1))
            self.skip()
            if self.text.startswith(",", self.pos):
                comma = True
                self.pos += 1
            elif not self.text.startswith(close, self.pos):
                raise self.fail(f"expected ',' or {close!r}")

    def mapping(self, depth: int) -> dict[Literal, Literal]:
        self.pos += 1
        out: dict[Literal, Literal] = {}
        while True:
            self.skip()
            if self.text.startswith("}", self.pos):
                self.pos += 1
                return out
            key = self.value(depth + 1)
            try:
                hash(key)
            except TypeError:
                raise self.fail("unhashable dict key") from None
            self.skip()
            if not self.text.startswith(":", self.pos):
                raise self.fail("expected ':'")
            self.pos += 1
            if key in out:
                raise self.fail(f"duplicate key {key!r}")
            out[key] = self.value(depth + 1)
            self.skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("}", self.pos):
                raise self.fail("expected ',' or '}'")
