"""The ``airlock`` command line: ``main(argv) -> int``; one module per subcommand, registered below.

Command modules are imported only when their command runs: ``airlock scan`` must not pay for
importing the gateway, the sandbox or the hashing engine. ``airlock --help`` lists the commands
from the table below without importing any of them (a test keeps the table's help lines equal to
the modules' own).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

from airlock import __version__
from airlock._cli.base import Command
from airlock.errors import AirlockError, UsageError

__all__ = ["COMMANDS", "CommandEntry", "entry_point", "main"]


class CommandEntry(NamedTuple):
    name: str
    #: the module that defines ``COMMAND`` for this name
    module: str
    #: the one-line help ``airlock --help`` shows (equal to the command's own ``help``)
    help: str

    def load(self) -> Command:
        command: Command = importlib.import_module(self.module).COMMAND
        return command


#: Every subcommand, in the order ``airlock --help`` lists them.
COMMANDS: tuple[CommandEntry, ...] = (
    CommandEntry("scan", "airlock._cli.scan_cmd", "scan model files or folders for code that would run on load (never executes them)"),
    CommandEntry("hash", "airlock._cli.hash_cmd", "print a manifest (path, size, digest) of every file of a model"),
    CommandEntry("sign", "airlock._cli.sign_cmd", "sign a model with an EC key (OpenSSF model signing bundle)"),
    CommandEntry("verify", "airlock._cli.verify_cmd", "check a model against a digest, lock file or signature (strict)"),
    CommandEntry("load", "airlock._cli.load_cmd", "list the tensors of a model file, loaded without running anything"),
    CommandEntry("convert", "airlock._cli.convert_cmd", "convert a pickle checkpoint or a Hugging Face folder to safetensors, running nothing"),
    CommandEntry("run", "airlock._cli.run_cmd", "load or run an untrusted model inside the OS sandbox"),
    CommandEntry("doctor", "airlock._cli.doctor_cmd", "show which sandbox layers work on this host (for airlock run)"),
    CommandEntry("serve", "airlock._cli.serve_cmd", "serve admitted models to authenticated tenants (KServe v2 over HTTPS)"),
    CommandEntry("tenant", "airlock._cli.tenant_cmd", "add or list the tenants of an airlock serve gateway"),
    CommandEntry("key", "airlock._cli.key_cmd", "create, revoke or list API keys of airlock serve tenants"),
    CommandEntry("audit", "airlock._cli.audit_cmd", "verify the hash chain of the airlock serve audit log"),
    CommandEntry("certs", "airlock._cli.certs_cmd", "make a development CA, server certificate and mTLS client certificates"),
)  # fmt: skip


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser, with full arguments for ``selected`` (all commands when it is ``"*"``)."""
    parser = argparse.ArgumentParser(
        prog="airlock",
        description="Use machine-learning models you do not trust without being owned by them.",
    )
    parser.add_argument("--version", action="version", version=f"airlock {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in COMMANDS:
        if selected not in (entry.name, "*"):
            sub.add_parser(entry.name, help=entry.help)
            continue
        command = entry.load()
        command_parser = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(command_parser)
        command_parser.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit codes: as the command documents; 2 for usage and airlock errors.

    Only :class:`AirlockError` is caught: anything else is a bug and keeps its traceback.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    names = {entry.name for entry in COMMANDS}
    selected = args_list[0] if args_list and args_list[0] in names else None
    parser = build_parser(selected)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code) if isinstance(exc.code, int) else 2
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return command.run(args)
    except UsageError as exc:
        print(f"airlock {command.name}: usage error: {_escaped(str(exc))}", file=sys.stderr)
        return 2
    except AirlockError as exc:
        print(f"airlock {command.name}: error: {_escaped(str(exc))}", file=sys.stderr)
        return 2


def _escaped(text: str) -> str:
    """An error message made safe for a terminal: messages may quote hostile input (a sandboxed
    job's error text, a file name), so control and invisible characters are escaped, line by line."""
    return "\n".join(line if line.isprintable() else repr(line)[1:-1] for line in text.split("\n"))


def entry_point() -> None:
    sys.exit(main())
