"""``airlock scan PATH... [--format F] [-q]`` is read without argparse (start-up, issue 10): the
namespace must be the one argparse builds, and every other command line must go to argparse."""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from airlock._cli import main
from airlock._cli._parser import ArgumentError, build_parser
from airlock._cli.scan_cmd import COMMAND


def _argparse(argv: list[str]) -> dict[str, object] | None:
    """What argparse makes of ``argv`` (None when it exits or reports a usage error)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return vars(build_parser("scan").parse_args(argv))
        except (SystemExit, ArgumentError):
            return None


def _fast(argv: list[str]) -> dict[str, object] | None:
    args = COMMAND.parse_common(argv)
    return None if args is None else vars(args)


#: command lines scripts run: read without argparse, to exactly argparse's namespace
COMMON = [
    ["scan", "model.pt"],
    ["scan", "model.pt", "--format", "json"],
    ["scan", "model.pt", "--format=sarif"],
    ["scan", "--format", "json", "a.pt", "b.pt"],
    ["scan", "-q", "a.pt", "b.pt", "--format", "html"],
    ["scan", "a.pt", "--quiet"],
    ["scan", "-"],
    ["scan", "hf://org/name@main", "--format", "cyclonedx"],
    ["scan", "x=y", "dir/", "--format=text", "-q"],
    ["scan", "-q", "--jobs", "2", "dir/"],
    ["scan", "dir/", "--jobs=8", "-o", "out.json", "--format", "json"],
    ["scan", "--output", "r.sarif", "--format=sarif", "a.pt"],
    ["scan", "--output=r.html", "--jobs", "007", "a.pt"],
]

#: command lines argparse must read: help, other options, abbreviations, mistakes
OTHERS = [
    ["scan"],
    ["scan", "--help"],
    ["scan", "-h", "a.pt"],
    ["scan", "a.pt", "--form", "json"],  # an abbreviation argparse accepts
    ["scan", "a.pt", "--format=JSON"],  # not a choice: argparse's error
    ["scan", "a.pt", "--format"],  # no value
    ["scan", "a.pt", "--format", "json", "--format", "text"],
    ["scan", "a.pt", "-q", "b.pt"],  # PATHs on both sides of an option: argparse's error
    ["scan", "-x.pt"],  # a PATH that starts with '-'
    ["scan", "--", "-x.pt"],
    ["scan", ""],
    ["scan", "a.pt", "--jobs", "-1"],  # argparse reads a negative number; the command refuses it
    ["scan", "a.pt", "--jobs", "+2"],
    ["scan", "a.pt", "--jobs", "\u0663"],  # int() reads an Arabic-Indic digit: argparse's to read
    ["scan", "a.pt", "--jobs="],
    ["scan", "a.pt", "--jobs", "2", "--jobs", "3"],
    ["scan", "a.pt", "--job", "2"],
    ["scan", "a.pt", "-oout.json"],
    ["scan", "a.pt", "-o", "-x"],
    ["scan", "a.pt", "-o", ""],
    ["scan", "a.pt", "--output="],
    ["scan", "a.pt", "-o=x"],
    ["scan", "a.pt", "--allow", "m.x"],
    ["scan", "a.pt", "--expect", "sha256:00"],
    ["scan", "a.pt", "--version"],
    ["scan", "a.pt", "-qq"],
    ["scan", "a.pt", "--quiet=1"],
    ["hash", "a.pt"],
]


def test_common_command_lines_skip_argparse_with_its_namespace() -> None:
    for argv in COMMON:
        fast = _fast(argv)
        assert fast is not None, argv
        assert fast == _argparse(argv), argv
        assert fast["_command"] is COMMAND


def test_other_command_lines_go_to_argparse() -> None:
    for argv in OTHERS:
        assert _fast(argv) is None, argv


def test_the_lists_it_returns_are_fresh() -> None:
    first = COMMAND.parse_common(["scan", "a.pt"])
    second = COMMAND.parse_common(["scan", "a.pt"])
    assert first is not None and second is not None
    first.allow.append("m.x")
    first.cert.append("ca.pem")
    assert second.allow == [] and second.cert == []


_TOKENS = st.sampled_from(
    [
        "a.pt", "dir/", "-", "", "x=y", "hf://o/n", "scan", "json", "text", "sarif", "html", "JSON",
        "-a.pt", "--", "-1", "--format", "--format=json", "--format=html", "--format=", "--format=x",
        "--form", "--form=json", "--formats", "-q", "--quiet", "--qu", "-qq", "--quiet=1", "-h",
        "--help", "--jobs", "2", "-o", "out", "--allow", "m.x", "--version", "--expect", "-j",
        "--jobs=3", "--jobs=", "--jobs=x", "0", "007", "+2", " 3", "\u0663", "--output", "--output=",
        "--output=r", "-oout", "-o=r", "--out", "--jo",
        "--max-archive-depth", "--unsafe-allow-extra", "-Q",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, max_size=7))
def test_generated_command_lines_read_as_argparse_reads_them(tokens: list[str]) -> None:
    argv = ["scan", *tokens]
    fast = _fast(argv)
    if fast is not None:
        assert fast == _argparse(argv)


def test_scan_output_and_exit_code_are_the_same_either_way(tmp_path: Path, capsys: object) -> None:
    """The same scan through the fast reader and through argparse (``--jobs 1`` is not a common
    command line): the same report and exit code."""
    path = tmp_path / "rows.pkl"
    path.write_bytes(pickle.dumps([{"id": 1}], protocol=4))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00cos\nsystem\n.")
    for target in (path, bad, tmp_path / "missing.pkl"):
        outputs = []
        for extra in ([], ["--jobs", "1"]):
            code = main(["scan", str(target), "--format", "json", *extra])
            out, err = capsys.readouterr()  # type: ignore[attr-defined]
            out = re.sub(r'"seconds": [0-9.e-]+', "", out)  # the one field that differs between runs
            outputs.append((code, out.replace(str(tmp_path), "T"), err.replace(str(tmp_path), "T")))
        assert outputs[0] == outputs[1], target
    assert outputs[0][0] == 2


def test_usage_errors_and_help_are_argparse_s(tmp_path: Path) -> None:
    """What argparse prints for a wrong common-looking command line, through the real script."""
    cases = {
        ("scan",): (2, "the following arguments are required: PATH"),
        ("scan", "a.pt", "--format", "JSON"): (2, "invalid choice: 'JSON'"),
        ("scan", "a.pt", "-q", "b.pt"): (2, "unrecognized arguments: b.pt"),
    }
    for args, (code, message) in cases.items():
        proc = subprocess.run(
            [sys.executable, "-m", "airlock", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert proc.returncode == code, (args, proc.stderr)
        assert "usage: airlock" in proc.stderr and message in proc.stderr, (args, proc.stderr)
    proc = subprocess.run(
        [sys.executable, "-m", "airlock", "scan", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "--max-archive-members N" in proc.stdout
