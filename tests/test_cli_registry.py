"""The command table: lazy entries match their modules, and scanning imports nothing else."""

from __future__ import annotations

import argparse
import subprocess
import sys

from airlock._cli import COMMANDS, build_parser, main


def test_entries_match_their_modules() -> None:
    for entry in COMMANDS:
        command = entry.load()
        assert command.name == entry.name
        assert command.help == entry.help, f"{entry.name}: update the help line in airlock._cli.COMMANDS"


def test_full_parser_builds_and_every_flag_has_help() -> None:
    parser = build_parser("*")
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers) == 1
    choices: dict[str, argparse.ArgumentParser] = subparsers[0].choices
    assert set(choices) == {entry.name for entry in COMMANDS}
    for name, sub in choices.items():
        for option in sub._actions:
            if option.option_strings and option.dest != "help":
                assert option.help, f"airlock {name} {option.option_strings[0]} has no help text"


def test_top_level_help_and_unknown_command(capsys: object) -> None:
    assert main(["--help"]) == 0
    assert main(["no-such-command"]) == 2
    assert main([]) == 2


def test_scan_command_imports_no_other_command() -> None:
    code = (
        "import sys\n"
        "from airlock._cli import main\n"
        "main(['scan', '--help'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('airlock.gateway', 'airlock.sandbox', "
        "'airlock.integrity._hash', 'numpy', 'jinja2', 'starlette', 'torch')))\n"
        "print(loaded, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stderr.strip().splitlines()[-1] == "[]"
