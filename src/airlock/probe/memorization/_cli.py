"""The command line of the memorization audit (``airlock probe --memorization``, dispatched by
:func:`airlock._cli.main`; also ``python -m airlock.probe.memorization``): :func:`main`, or
:func:`add_arguments` and :func:`run` for a parent command's parser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from airlock.errors import AirlockError

__all__ = ["PROG", "add_arguments", "main", "run"]

PROG = "airlock probe --memorization"
DESCRIPTION = (
    "Measure how much a model memorised given records before it is published: the exposure of each "
    "canary (its rank by log-likelihood among random texts of the same format, Carlini et al., "
    '"The Secret Sharer") and whether completing its prefix reproduces the secret. The model is '
    "gated like `airlock run` (sealed private copies, scan: only CLEAN passes) and runs only inside "
    "the sandbox. Exit 0: no record at risk; 1: at least one at risk; 2: any error. See docs/memorization.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from airlock._cli._sandboxed import add_gate_arguments

    parser.add_argument(
        "model", type=Path, metavar="MODEL", help="a GGUF file, or a Hugging Face folder "
        "(config.json, tokenizer.json, model.safetensors)"
    )  # fmt: skip
    parser.add_argument(
        "--records", type=Path, required=True, metavar="FILE",
        help='JSON {"records": [{"id", "text", "template" | "prefix"}]} (docs/memorization.md)',
    )  # fmt: skip
    parser.add_argument(
        "--candidates",
        type=int,
        default=1000,
        help="random texts of each format to rank against (default 1000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidates (default 0)")
    parser.add_argument(
        "--alpha", type=float, default=0.01,
        help="chance that any unseen record is flagged, for the default threshold (default 0.01)",
    )  # fmt: skip
    parser.add_argument(
        "--threshold", type=float, metavar="BITS",
        help="exposure in bits from which a record is at risk (default log2(records / alpha))",
    )  # fmt: skip
    parser.add_argument(
        "--beams", type=int, default=1, help="beam search width for extraction (default 1: greedy)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, metavar="N",
        help="tokens generated per prefix (default: the longest secret's UTF-8 bytes + 8)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="threads of the sandboxed job (default 1)")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="what goes to stdout (default text)"
    )
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="also write the JSON report here")
    add_gate_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the audit for parsed ``args``; the exit code (0 clean, 1 at risk). Raises AirlockError."""
    from airlock._cli.base import write_output
    from airlock.policy import Policy
    from airlock.probe.memorization._audit import audit
    from airlock.probe.memorization._records import load_records
    from airlock.probe.memorization._report import Settings
    from airlock.sandbox import SandboxLevel, SandboxPolicy
    from airlock.sandbox._policy import SandboxLimits

    for flag, on in (
        ("--unsafe-weaker-sandbox: missing layers will NOT stop the run", args.unsafe_weaker_sandbox),
        ("--unsafe-skip-scan: the static scan gate is OFF", args.unsafe_skip_scan),
        ("--unsafe-allow-suspicious: a SUSPICIOUS model will be loaded", args.unsafe_allow_suspicious),
    ):
        if on:
            print(f"{PROG}: WARNING: {flag}", file=sys.stderr)
    records = load_records(args.records)
    settings = Settings(
        candidates=args.candidates,
        seed=args.seed,
        alpha=args.alpha,
        threshold_bits=args.threshold,
        beams=args.beams,
        max_new_tokens=args.max_new_tokens,
    )
    if not 1 <= args.threads <= 256:
        raise AirlockError("--threads must be in 1..256")
    policy = SandboxPolicy(
        level=SandboxLevel(args.level),
        limits=SandboxLimits(wall_seconds=args.timeout, threads=args.threads),
        unsafe_weaker_sandbox=args.unsafe_weaker_sandbox,
    )
    report = audit(
        args.model,
        records,
        settings,
        policy=policy,
        scan_policy=Policy(allow=frozenset(args.allow), sources=("--allow",)) if args.allow else None,
        expect=args.expect,
        unsafe_allow_suspicious=args.unsafe_allow_suspicious,
        unsafe_skip_scan=args.unsafe_skip_scan,
    )
    if report.false_positive_bound > settings.alpha:
        print(
            f"{PROG}: note: with {settings.candidates} candidates an unseen record is flagged with probability up to "
            f"{report.false_positive_bound:.3g} (above --alpha {settings.alpha}): raise --candidates (and --threshold)",
            file=sys.stderr,
        )
    if args.output is not None:
        write_output(args.output, report.to_json())
    sys.stdout.write(report.to_json() if args.format == "json" else report.to_text())
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """``airlock probe --memorization ARGS``: 0 no record at risk, 1 some at risk, 2 an error."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help: 0; a bad option: 2
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        return run(args)
    except AirlockError as exc:
        from airlock.sandbox._messages import printable

        print(f"{PROG}: error: {printable(str(exc))}", file=sys.stderr)
        return 2
