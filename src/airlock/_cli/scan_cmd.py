"""``airlock scan``: static, fail-closed scan of model files and folders."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from airlock._cli._stdin import STDIN, spooled_stdin
from airlock._cli.base import write_output
from airlock._cli.verify_cmd import (
    add_trust_arguments,
    trust_defaults,
    unsafe_flags,
    verify_from_args,
    wants_verification,
)
from airlock._record import replace
from airlock._render import FORMATS, render, shown_name
from airlock._scan.api import scan
from airlock._scan.pool import reap_after
from airlock.errors import AirlockError, IntegrityError, UsageError
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.policy import DEFAULT_PROFILES, Policy
from airlock.results import Report, Verdict

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (see ``airlock/__init__.py``)
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from argparse import Namespace
    from collections.abc import Sequence

    from airlock.integrity import Verified
else:
    from types import SimpleNamespace as Namespace  # what parse_common returns: argparse's attributes

__all__ = ["COMMAND"]

_LIMIT_FLAGS = {
    "max_seconds_per_file": float,
    "max_decompressed_bytes": int,
    "max_pickle_opcodes": int,
    "max_archive_depth": int,
    "max_archive_members": int,
}


#: the options with a value that the fast reader knows (:meth:`ScanCommand.parse_common`)
_VALUED = {"--format": "format", "--jobs": "jobs", "-o": "output", "--output": "output"}


class ScanCommand:
    name = "scan"
    #: the report is written (stdout, or ``-o`` closed) when :meth:`run` returns: the process may
    #: leave without tearing the interpreter down (``airlock._cli._leave_now`` checks the rest)
    quick_exit = True
    help = "scan model files or folders for code that would run on load (never executes them)"
    description = (
        "Statically analyse model files (pickle, PyTorch, NumPy, joblib, ...) detected by content. "
        "Nothing is executed, written or sent anywhere. Exit codes: 0 clean, 1 malicious, "
        "2 error or usage, 3 suspicious only. Anything not proven clean is not clean. With --lock, "
        "--signature or --expect the files are verified first (exit 1 if they do not match) and the "
        "scan reads exactly the verified bytes."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "paths",
            nargs="+",
            metavar="PATH",
            help="files or folders to scan; - reads one file from standard input; hf://ORG/NAME[@REVISION] "
            "scans that model's snapshot in the local Hugging Face cache (HF_HUB_CACHE / HF_HOME; offline, "
            "nothing is downloaded)",
        )
        parser.add_argument(
            "--format",
            choices=sorted(FORMATS),
            default="text",
            help="output format: text for people (default), json (versioned schema), sarif (SARIF 2.1.0), "
            "cyclonedx (CycloneDX 1.6 ML-BOM; needs the 'sbom' extra), html (one self-contained page)",
        )
        parser.add_argument(
            "-o", "--output", type=Path, help="write the report to this file instead of stdout"
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=None,
            metavar="N",
            help="scan files in N processes, this one and N-1 forked workers (default: the CPUs available, "
            "at most 8, when 256 files or more, or 256 MiB or more in two files or more, are scanned; else "
            "one process)",
        )
        parser.add_argument(
            "--ray",
            metavar="ADDRESS",
            help="read the files on the workers of the Ray cluster at ADDRESS (HOST:PORT; auto: "
            "RAY_ADDRESS) with Ray token authentication (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token); the workers must see the PATHs where this host does; needs the 'ray' "
            "extra; docs/scale.md",
        )
        parser.add_argument(
            "--policy",
            type=Path,
            metavar="FILE",
            help="TOML policy file: 'profiles' (list) and 'allow' (exact dotted names); see docs/scan.md",
        )
        parser.add_argument(
            "--allow",
            action="append",
            default=[],
            metavar="MODULE.NAME",
            help="allow one more exact name (repeatable): a pickle global, a custom Keras class "
            "(mypkg.layers.MyLayer), a Hugging Face remote-code class (modeling_x.MyModel) or a module a "
            "config names; never overrides a known-dangerous callable",
        )
        parser.add_argument(
            "--profile",
            action="append",
            choices=DEFAULT_PROFILES,
            metavar="NAME",
            help=f"use only these allowlist profiles (repeatable; default all: {', '.join(DEFAULT_PROFILES)})",
        )
        add_trust_arguments(parser, required=False)
        for name, kind in _LIMIT_FLAGS.items():
            parser.add_argument(
                "--" + name.replace("_", "-"),
                type=kind,
                metavar="N",
                help=f"limit {name} (default {getattr(DEFAULT_LIMITS, name)})",
            )

    def parse_common(self, argv: Sequence[str]) -> argparse.Namespace | None:
        """``airlock scan PATH... [--format F] [-q] [--jobs N] [-o FILE]``, the command lines scripts
        and CI run, read without argparse (whose import, with gettext and locale, is a twentieth of the scan of one
        checkpoint). The result has exactly the attributes and values argparse would give
        (tests/test_cli_scan_fast.py compares them on generated command lines); anything else —
        another option, an abbreviation, ``--help``, a PATH that starts with ``-`` (but ``-``
        itself), a value argparse would reject — is None, and argparse reads the command line
        with its usual help and messages."""
        if not argv or argv[0] != self.name:
            return None
        paths: list[str] = []
        seen: set[str] = set()
        values: dict[str, object] = {"format": "text", "quiet": False, "jobs": None, "output": None}
        after_paths = False  # an option came after the PATHs: more PATHs are argparse's error
        value: object
        index = 1
        while index < len(argv):
            arg = argv[index]
            index += 1
            if arg == "-" or (arg[:1] not in ("", "-")):
                if after_paths:
                    return None
                paths.append(arg)
                continue
            after_paths = bool(paths)
            name, equals, attached = arg.partition("=")
            if arg in ("-q", "--quiet"):
                key, value = "quiet", True
            elif name in _VALUED and name.startswith("--") and equals:
                key, value = _VALUED[name], attached
            elif arg in _VALUED and index < len(argv):
                key, value = _VALUED[arg], argv[index]
                index += 1
            else:
                return None
            if key in seen or not isinstance(value, (str, bool)):
                return None
            if key == "format" and value not in FORMATS:
                return None
            if key == "jobs":  # ASCII digits only: anything else is argparse's to read or refuse
                if not (isinstance(value, str) and value.isascii() and value.isdigit()):
                    return None
                value = int(value)
            if key == "output":
                if not isinstance(value, str) or not value or value.startswith("-"):
                    return None
                value = Path(value)
            seen.add(key)
            values[key] = value
        if not paths:
            return None
        return Namespace(
            command=self.name,
            paths=paths,
            ray=None,
            policy=None,
            allow=[],
            profile=None,
            **trust_defaults(),
            **dict.fromkeys(_LIMIT_FLAGS),
            **values,
            _command=self,
        )

    def run(self, args: argparse.Namespace) -> int:
        # The workers of a scan are reaped after the report is written, not before: their exits
        # (each tears down its copy of the address space) overlap the report's rendering.
        with reap_after():
            return self._run(args)

    def _run(self, args: argparse.Namespace) -> int:
        policy = _policy(args)
        changes = {n: getattr(args, n) for n in _LIMIT_FLAGS if getattr(args, n) is not None}
        limits: Limits = DEFAULT_LIMITS.replace(**changes) if changes else DEFAULT_LIMITS
        paths = [_path(p) for p in args.paths]
        verified = None
        if args.ray is not None and wants_verification(args):
            raise UsageError(
                "--ray does not verify (the workers would read the files again after the check); "
                "scan verified files without --ray"
            )
        if unsafe_flags(args) and not wants_verification(args):
            raise UsageError(
                f"{unsafe_flags(args)[0]} only weakens a verification; give --lock, --signature or "
                "--expect with it (without one it would do nothing)"
            )
        if wants_verification(args):
            if len(paths) != 1:
                raise UsageError("--expect, --lock and --signature verify one PATH; give exactly one")
            try:
                verified = verify_from_args(args, str(paths[0]), command="scan")
            except IntegrityError as exc:
                print(f"airlock scan: integrity check FAILED, nothing was scanned: {exc}", file=sys.stderr)
                return 1
        if args.ray is not None:
            reports = _scan_on_ray(args, paths, policy, limits)
        else:
            reports = [_scan_one(path, policy, limits, args.jobs, verified) for path in paths]
        report = reports[0] if len(reports) == 1 else _merge(reports)
        text = render(report, args.format)
        try:
            if args.output is None:
                _write_stdout(text)
            else:
                _refuse_links_in_scanned_trees(args.output, [str(p) for p in paths])
                write_output(args.output, text)
        except AirlockError as exc:
            # Not writing the report is an ERROR that joins the verdict, worst first: a scan that
            # found a MALICIOUS file still exits 1. It exited 2, which `fail-on: malicious` in
            # action.yml tolerates: a folder named airlock.sarif in a pull request turned a
            # malicious model into a passing job (outside review 27).
            from airlock._cli import _escaped

            worst = Verdict.worst([report.verdict, Verdict.ERROR])
            print(
                f"airlock scan: error: {_escaped(str(exc))}; the report was not written (verdict "
                f"{report.verdict.value}, exit code {worst.exit_code})",
                file=sys.stderr,
            )
            return worst.exit_code
        return report.exit_code


def _write_stdout(text: str) -> None:
    """The report on standard output, flushed. A stdout that is closed or whose reader has gone
    (``airlock scan . | head -1``) is an AirlockError like an ``-o`` that cannot be written, and
    standard output then goes to the null device, so the interpreter's own flush at exit cannot
    fail again: the exit code was 1 (a BrokenPipeError traceback), "malicious" for a clean scan,
    or 120 (outside review 27)."""
    import os

    try:
        if sys.stdout is None:
            raise OSError(9, "standard output is closed")
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        raise AirlockError(f"cannot write the report to standard output: {exc.strerror or exc}") from exc


def _refuse_links_in_scanned_trees(output: Path, roots: list[str]) -> None:
    """A report written inside a scanned tree goes where its name says. The tree is what is being
    inspected (the checkout of a pull request, where action.yml writes ``airlock.sarif``): a link
    it holds at the report's name, or at a folder on the way, chose another file to overwrite
    (``airlock.sarif -> ~/.bashrc`` was truncated and rewritten). Refused, with an error; outside
    the scanned trees the caller's own links (``-o /dev/stdout``) are followed as always."""
    import os

    wanted = os.path.abspath(output)
    for root in roots:
        if root == STDIN:
            continue
        base = os.path.abspath(root)
        if not os.path.isdir(base) or os.path.commonpath([wanted, base]) != base:
            continue
        expected = os.path.join(os.path.realpath(base), os.path.relpath(wanted, base))
        if os.path.realpath(wanted) != expected:
            # the place is the tree's text: one shown name, never a line of its own
            raise AirlockError(
                f"cannot write {output}: a link inside the scanned tree {root} leads it elsewhere "
                f"({shown_name(os.path.realpath(wanted))}); not followed"
            )


def _path(text: str) -> Path:
    if text.startswith("hf://"):
        from airlock._formats.hf_cache import resolve_hf_uri  # only for hf:// paths

        return resolve_hf_uri(text)
    return Path(text)


def _scan_on_ray(args: argparse.Namespace, paths: list[Path], policy: Policy, limits: Limits) -> list[Report]:
    import os

    address = os.environ.get("RAY_ADDRESS", "") if args.ray == "auto" else args.ray
    if not address:
        raise UsageError("--ray auto takes the cluster's address from RAY_ADDRESS, which is not set")
    if args.jobs is not None:
        raise UsageError("--jobs and --ray both choose where files are read; give one")
    if any(str(path) == STDIN for path in paths):
        raise UsageError("standard input (-) is read here, not on a Ray cluster; save it to a file")
    import contextlib

    from airlock._scan.api import plan_scan
    from airlock._scan.cluster import connect, run_plans, stderr_note

    plans = [plan_scan(path, policy=policy, limits=limits) for path in paths]
    # Ray's driver prints what the cluster reports (a worker that died ...) on stdout, where the
    # report goes: while connected, stdout is stderr.
    with contextlib.redirect_stdout(sys.stderr):
        ray = connect(address)
        try:
            results = run_plans(ray, plans, note=stderr_note)
        finally:
            ray.shutdown()
    return [plan.finish(result) for plan, result in zip(plans, results, strict=True)]


def _scan_one(
    path: Path, policy: Policy, limits: Limits, jobs: int | None, verified: Verified | None
) -> Report:
    if str(path) != STDIN:
        return scan(path, policy=policy, limits=limits, jobs=jobs, verified=verified)
    if verified is not None:
        raise UsageError("standard input (-) cannot be verified first; save it to a file")
    with spooled_stdin(limits.max_total_decompressed_bytes) as spooled:
        report = scan(spooled, policy=policy, limits=limits)
        name = str(spooled)
    rename = {name: STDIN}
    return replace(
        report,
        root=STDIN,
        files=tuple(replace(f, path=rename.get(f.path, f.path)) for f in report.files),
        skipped=tuple(replace(s, path=rename.get(s.path, s.path)) for s in report.skipped),
    )


def _policy(args: argparse.Namespace) -> Policy:
    allow = frozenset(args.allow)
    if args.policy is not None:
        if args.profile:
            raise UsageError("--profile and --policy both choose profiles; put 'profiles' in the policy file")
        return Policy.from_file(args.policy, extra_allow=allow)
    profiles = tuple(args.profile) if args.profile else DEFAULT_PROFILES
    return Policy(profiles, allow, ("--allow",) if allow else ())


def _merge(reports: list[Report]) -> Report:
    return Report(
        root=reports[0].root,
        roots=tuple(r.root for r in reports),
        files=tuple(f for r in reports for f in r.files),
        skipped=tuple(s for r in reports for s in r.skipped),
        unsafe_options=reports[0].unsafe_options,
        allowances=reports[0].allowances,
    )


COMMAND = ScanCommand()
