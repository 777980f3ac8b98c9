"""The argparse side of the command line: the parser of ``airlock`` and of the selected command.

Kept apart from :mod:`airlock._cli` so that ``airlock --version`` (answered before any parser is
built) does not import argparse, gettext and locale.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import NoReturn

from airlock import __version__
from airlock._cli import COMMANDS, QUIET, docs_location

__all__ = ["ArgumentError", "build_parser"]


class ArgumentError(Exception):
    """argparse's complaint about the command line, raised instead of exiting."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions like argparse does, but never inside a word: paths stay whole."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
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
    """The parser, with full arguments for ``selected`` (all commands when it is ``"*"``)."""
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
            sub.add_parser(entry.name, help=entry.help)
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
