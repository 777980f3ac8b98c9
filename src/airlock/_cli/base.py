"""The interface every subcommand implements."""

from __future__ import annotations

import argparse
from typing import Protocol

__all__ = ["Command"]


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
