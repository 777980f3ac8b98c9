"""The ``airlock`` command line: ``main(argv) -> int``; one module per subcommand, registered below."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airlock import __version__
from airlock._cli import (
    audit_cmd,
    certs_cmd,
    convert_cmd,
    doctor_cmd,
    hash_cmd,
    key_cmd,
    load_cmd,
    run_cmd,
    scan_cmd,
    serve_cmd,
    sign_cmd,
    tenant_cmd,
    verify_cmd,
)
from airlock._cli.base import Command
from airlock.errors import AirlockError, UsageError

__all__ = ["COMMANDS", "entry_point", "main"]

#: Every subcommand, in the order ``airlock --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    scan_cmd.COMMAND,
    hash_cmd.COMMAND,
    sign_cmd.COMMAND,
    verify_cmd.COMMAND,
    load_cmd.COMMAND,
    convert_cmd.COMMAND,
    run_cmd.COMMAND,
    doctor_cmd.COMMAND,
    serve_cmd.COMMAND,
    tenant_cmd.COMMAND,
    key_cmd.COMMAND,
    audit_cmd.COMMAND,
    certs_cmd.COMMAND,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airlock",
        description="Use machine-learning models you do not trust without being owned by them.",
    )
    parser.add_argument("--version", action="version", version=f"airlock {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command_parser = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(command_parser)
        command_parser.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit codes: as the command documents; 2 for usage and airlock errors.

    Only :class:`AirlockError` is caught: anything else is a bug and keeps its traceback.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code) if isinstance(exc.code, int) else 2
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return command.run(args)
    except UsageError as exc:
        print(f"airlock {command.name}: usage error: {exc}", file=sys.stderr)
        return 2
    except AirlockError as exc:
        print(f"airlock {command.name}: error: {exc}", file=sys.stderr)
        return 2


def entry_point() -> None:
    sys.exit(main())
