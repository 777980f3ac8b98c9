"""Encoding for the downstream sink (``encode`` step): the last step, it makes every character of
the output inert in the place it goes.

* ``html``: ``& < > " '`` become character references (safe in element content and in quoted
  attribute values; never put text into a script, style or unquoted attribute, nor into a URL
  attribute such as ``href``: ``javascript:alert(1)`` has nothing to escape).
* ``markdown``: every ASCII punctuation character is backslash-escaped (CommonMark lets any of
  them be escaped, and an escaped one is literal: no emphasis, link, image, HTML or entity), and
  ``<``, ``>`` and ``&`` are also written as character references for renderers that allow HTML.
  The first space or tab of each line is a character reference (``&#32;``), so no line is
  indented code, where escapes are shown as written (outside review 14).
* ``shell``: one POSIX shell word (``shlex.quote``: single quotes, ``'`` as ``'"'"'``); text with
  a NUL byte cannot be an argument and is BLOCKED. So is text that starts with ``-`` unless the
  configuration says the command line ends its options (``--``) before this word
  (``shell_options_ended``): quoting makes ``-la`` one word, but the command still reads it as
  options (``--upload-pack=...``, ``--checkpoint-action=exec=...``: argument injection), and no
  encoding of the word can change that (outside review 14).
* ``sql``: one standard SQL string literal (``'`` doubled; a NUL is BLOCKED). This is right for
  PostgreSQL (standard_conforming_strings on, the default), SQLite and SQL Server; MySQL needs
  NO_BACKSLASH_ESCAPES. Query parameters (placeholders) are the right answer wherever the driver
  has them: use this only where a literal must be written.
"""

from __future__ import annotations

import enum
import html
import re
import shlex
from dataclasses import dataclass
from typing import Final

from airlock.errors import UsageError
from airlock.guard._step import StepReport
from airlock.guard._types import Action, Edit, Hit

__all__ = ["EncodeConfig", "EncodeStep", "Sink", "encode"]


class Sink(enum.Enum):
    HTML = "html"
    MARKDOWN = "markdown"
    SHELL = "shell"
    SQL = "sql"


_MD_PUNCT: Final = frozenset("!\"#$%'()*+,-./:;=?@[\\]^_`{|}~")
_MD_TABLE: Final = {ord(c): "\\" + c for c in _MD_PUNCT} | {
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord("&"): "&amp;",
}


#: the first space or tab of a line: four of them start an indented code block, where escapes and
#: references are shown as written ("    a*b" rendered as "a\\*b"); written as a reference it is
#: not indentation (CommonMark counts indentation on the characters themselves)
_MD_INDENT: Final = re.compile(r"(?:^|(?<=[\n\r]))[ \t]")


def encode(text: str, sink: Sink, *, shell_options_ended: bool = False) -> str:
    """``text`` made inert for ``sink``. Raises :class:`UsageError` for text that cannot be
    encoded for it (a NUL for shell and SQL; for shell, a leading ``-`` unless
    ``shell_options_ended``: the command line has ``--`` before this word)."""
    if sink is Sink.HTML:
        return html.escape(text, quote=True)
    if sink is Sink.MARKDOWN:
        return _MD_INDENT.sub(lambda m: f"&#{ord(m.group(0))};", text.translate(_MD_TABLE))
    if "\x00" in text:
        raise UsageError(f"text with a NUL character cannot be encoded for {sink.value}")
    if sink is Sink.SHELL:
        if text.startswith("-") and not shell_options_ended:
            raise UsageError(
                "text starting with '-' would be read as an option: end the options with '--' "
                "before this argument and pass shell_options_ended=True"
            )
        return shlex.quote(text)
    if sink is Sink.SQL:
        return "'" + text.replace("'", "''") + "'"
    raise AssertionError(sink)  # pragma: no cover


@dataclass(frozen=True, slots=True)
class EncodeConfig:
    """``sink``: where the output goes (see the module docstring for what each encoding does).
    ``shell_options_ended``: for ``shell``, the command line has ``--`` before this argument, so a
    leading ``-`` is data (default False: such text is BLOCKED, ``encode.leading-dash``)."""

    sink: Sink
    shell_options_ended: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.sink, Sink):
            raise UsageError(f"EncodeConfig.sink must be a Sink, got {self.sink!r}")
        if not isinstance(self.shell_options_ended, bool):
            raise UsageError(
                f"EncodeConfig.shell_options_ended must be a bool, got {self.shell_options_ended!r}"
            )


class EncodeStep:
    name = "encode"

    def __init__(self, config: EncodeConfig) -> None:
        self.config = config

    def check(self, text: str) -> StepReport:
        sink = self.config.sink
        if sink in (Sink.SHELL, Sink.SQL) and "\x00" in text:
            at = text.index("\x00")
            return StepReport(
                (
                    Hit(
                        "encode.nul",
                        f"a NUL character cannot be part of a {sink.value} value",
                        at,
                        at + 1,
                        Action.BLOCK,
                    ),
                )
            )
        if sink is Sink.SHELL and text.startswith("-") and not self.config.shell_options_ended:
            return StepReport(
                (
                    Hit(
                        "encode.leading-dash",
                        "a shell argument starting with '-' is read as an option (no '--' before it)",
                        0,
                        1,
                        Action.BLOCK,
                    ),
                )
            )
        encoded = encode(text, sink, shell_options_ended=self.config.shell_options_ended)
        return StepReport(edits=(Edit(0, len(text), encoded),) if encoded != text else ())
