"""The argparse side of the command line: the parser of ``airlock`` and of the selected command.

Kept apart from :mod:`airlock._cli` so that ``airlock --version`` (answered before any parser is
built) does not import argparse, gettext and locale.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from airlock import __version__
from airlock._cli import COMMANDS, QUIET, docs_location

__all__ = ["ArgumentError", "build_parser"]


class ArgumentError(Exception):
    """argparse's complaint about the command line, raised instead of exiting."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` gives it (``COLUMNS``, the terminal
    of standard output, else 80), without importing shutil (and with it zlib, bz2 and lzma):
    argparse makes a formatter for every argument it adds, and its default asks shutil."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions like argparse does, but never inside a word: paths stay whole."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ):
        super().__init__(
            prog, indent_increment, max_help_position, _columns() - 2 if width is None else width
        )

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap  # only when a help text is shown

        text = " ".join(text.split())
        return textwrap.fill(
            text,
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors reach :func:`main` (to print them as JSON too)."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(self, message)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser, with full arguments for ``selected`` (all commands when it is ``"*"``; with
    ``None``, every command listed, none with its arguments). With one command selected, the
    others are left out: nothing would show them, and each would cost a parser at start-up."""
    epilog = f"The docs/*.md files named in help texts are installed in {docs_location()}"
    parser = _Parser(
        prog="airlock",
        description="Use machine-learning models you do not trust without being owned by them.",
        epilog=epilog,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"airlock {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in COMMANDS:
        if selected not in (entry.name, "*"):
            if selected is None:  # the list of commands is shown (help, unknown command) only then
                sub.add_parser(entry.name, help=entry.help, formatter_class=_Formatter)
            continue
        command = entry.load()
        command_parser = sub.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=epilog,
            formatter_class=_Formatter,
        )
        command.add_arguments(command_parser)
        if entry.name in QUIET:
            command_parser.add_argument(
                "-q", "--quiet", action="store_true", help="no progress display on a terminal"
            )
        command_parser.set_defaults(_command=command)
    return parser
