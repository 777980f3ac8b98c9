"""The interface every subcommand implements."""

from __future__ import annotations

import os

from airlock.errors import AirlockError

#: ``typing.TYPE_CHECKING`` without importing ``typing``: ``airlock scan`` imports this module, and
#: :class:`Command` is an interface for type checkers only (commands are plain classes)
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Protocol

__all__ = ["Command", "write_output"]


def write_output(path: str | os.PathLike[str], text: str) -> None:
    """Write a report to ``-o PATH``. Failing to write is an error (exit 2), not a usage error:
    the command line was right, the file system said no."""
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise AirlockError(f"cannot write {os.fspath(path)}: {exc.strerror or exc}") from exc


if TYPE_CHECKING:

    class Command(Protocol):
        @property
        def name(self) -> str: ...

        @property
        def help(self) -> str:
            """One line for ``airlock --help``."""
            ...

        @property
        def description(self) -> str:
            """A paragraph for ``airlock NAME --help``."""
            ...

        def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

        def run(self, args: argparse.Namespace) -> int:
            """Do the work; return the exit code. Raise AirlockError for failures the user must see."""
            ...
