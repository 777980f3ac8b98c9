"""``airlock probe``: prompt-injection pre-analysis of a model behind an OpenAI-compatible endpoint,
or of a local GGUF model or Hugging Face folder run in a sandboxed job (docs/probe.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from airlock._cli.base import write_output
from airlock.errors import UsageError

__all__ = ["COMMAND"]

#: a guard configuration larger than this is not a guard table
_MAX_GUARD_BYTES: Final = 1 << 20
EXIT_REGRESSION: Final = 1
#: Budget and Settings fields -> the flags that set them (for their error messages)
_FLAGS: Final = {
    "budget max_prompts": "--max-prompts",
    "budget max_tokens": "--max-tokens",
    "budget max_seconds": "--max-seconds",
    "budget benign": "--benign",
    "budget request_seconds": "--timeout",
    "seed": "--seed",
}


class ProbeCommand:
    name = "probe"
    help = "attack a served or local model with seeded prompt injections; success rates per family, CI regression mode"
    description = (
        "Send seeded prompt-injection attacks (instruction override, system-prompt extraction, "
        "role-play, delimiter confusion, indirect injection through documents and tool output, "
        "encodings, translation, payload splitting, many-shot) to an OpenAI-compatible chat endpoint, or to a "
        "local GGUF model or Hugging Face folder run in airlock's sandbox (gated like `airlock chat`: only a CLEAN "
        "scan passes; its chat template is rendered inside the sandbox), detect "
        "successes with canaries (a secret in the system prompt, an action token), measure each "
        "detector's false-positive rate on benign conversations, and report success rates per "
        "family with 95% Wilson intervals. Nothing but the target is contacted. Exit codes: 0 done, "
        "1 a family's success rate rose above its --baseline interval, 2 error or usage. See docs/probe.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from airlock.probe import FAMILIES

        parser.add_argument(
            "target",
            metavar="TARGET",
            help="the OpenAI-compatible base URL (e.g. https://127.0.0.1:8443/v1), or a local GGUF "
            "chat model file or Hugging Face model folder (safetensors, with a chat template), run in airlock's sandbox",
        )
        parser.add_argument(
            "--memorization",
            action="store_true",
            help="instead: audit a model for memorised training records before publishing it — "
            "airlock probe --memorization MODEL --records FILE [...] (see airlock probe --memorization --help "
            "and docs/memorization.md)",
        )
        parser.add_argument(
            "--model",
            help="the model name sent in each request (required with a URL; with a local model, the name "
            "shown in the report, default the file name)",
        )
        parser.add_argument(
            "--api-key-file",
            type=Path,
            metavar="FILE",
            help="a file holding the API key (sent as a Bearer token)",
        )
        parser.add_argument(
            "--ca", type=Path, metavar="FILE", help="PEM CA bundle to verify the target's TLS certificate"
        )
        parser.add_argument(
            "--unsafe-plain-http",
            action="store_true",
            help="allow plain http:// to a host that is not loopback (prompts and key unencrypted)",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=0,
            help="seed of the canary, the mutations and the sampling (default 0)",
        )
        parser.add_argument(
            "--family",
            action="append",
            choices=FAMILIES,
            metavar="NAME",
            help=f"attack only this family (repeatable; default all): {', '.join(FAMILIES)}",
        )
        budget = parser.add_argument_group("budget")
        budget.add_argument(
            "--max-prompts", type=int, default=50, metavar="N", help="attack prompts in all (default 50)"
        )
        budget.add_argument(
            "--max-tokens", type=int, default=48, metavar="N", help="tokens per reply (default 48)"
        )
        budget.add_argument(
            "--max-seconds",
            type=float,
            default=900,
            metavar="S",
            help="wall-clock budget of the run; attacks not sent by then are reported as not run (default 900)",
        )
        budget.add_argument(
            "--benign",
            type=int,
            default=12,
            metavar="N",
            help="benign conversations for the detectors' false-positive rates (default 12, all; 0: none)",
        )
        budget.add_argument(
            "--timeout", type=float, default=120, metavar="S", help="seconds per request (default 120)"
        )
        local = parser.add_argument_group(
            "local model (TARGET is a GGUF file or a Hugging Face folder; see docs/probe.md)"
        )
        local.add_argument(
            "--level",
            choices=("standard", "strict"),
            help="sandbox isolation level (see airlock doctor; default standard)",
        )
        local.add_argument(
            "--threads", type=int, metavar="N", help="compute threads of the sandboxed job (default 1)"
        )
        local.add_argument(
            "--load-timeout",
            type=float,
            metavar="S",
            help=f"seconds the sandboxed job may take to start and load the model (default {_LOAD_SECONDS:.0f})",
        )
        local.add_argument(
            "--expect",
            metavar="sha256:HEX",
            help="refuse the model unless its bytes have this digest (a GGUF file; a folder: check it with airlock verify)",
        )
        local.add_argument(
            "--allow",
            action="append",
            metavar="MODULE.NAME",
            help="a callable the scan may treat as known (repeatable), as for `airlock scan --allow`",
        )
        local.add_argument(
            "--unsafe-allow-suspicious",
            action="store_true",
            help="load a model the scan finds SUSPICIOUS (UNSAFE, warns)",
        )
        local.add_argument(
            "--unsafe-skip-scan",
            action="store_true",
            help="do not scan the model; the sandbox is then the only protection (UNSAFE, warns)",
        )
        local.add_argument(
            "--unsafe-weaker-sandbox",
            action="store_true",
            help="run even if sandbox layers the level needs are missing (UNSAFE, warns)",
        )
        parser.add_argument(
            "--with-guard",
            type=Path,
            metavar="FILE",
            help="a TOML guard table (docs/guard.md): attack prompts go through it; reports the reduction",
        )
        parser.add_argument(
            "--baseline",
            type=Path,
            metavar="FILE",
            help="a stored JSON report: exit 1 if a family's success rate rose above its interval",
        )
        parser.add_argument(
            "--worst",
            type=int,
            default=5,
            metavar="N",
            help="transcripts of successful attacks to show (default 5)",
        )
        parser.add_argument(
            "--format", choices=("text", "json"), default="text", help="what stdout shows (default text)"
        )
        parser.add_argument("--json", type=Path, metavar="FILE", help="write the JSON report here")
        parser.add_argument("--sarif", type=Path, metavar="FILE", help="write a SARIF 2.1.0 report here")
        parser.add_argument("--html", type=Path, metavar="FILE", help="write an HTML report here")

    def run(self, args: argparse.Namespace) -> int:
        from airlock.probe import (
            Budget,
            ChatClient,
            Settings,
            Target,
            baseline_rates,
            compare,
            current_rates,
            probe,
            read_api_key,
            render_html,
            render_sarif,
            render_text,
            report_json,
        )

        if args.worst < 0:
            raise UsageError(f"--worst must be >= 0, got {args.worst}")
        try:
            budget = Budget(args.max_prompts, args.max_tokens, args.max_seconds, args.benign, args.timeout)
            families = tuple(dict.fromkeys(args.family)) if args.family else Settings().families
            settings = Settings(args.seed, budget, families)
        except ValueError as exc:
            message = str(exc)
            for field, flag in _FLAGS.items():
                message = message.replace(field, flag)
            raise UsageError(message) from exc
        is_url = "://" in args.target
        _check_flags(args, is_url)
        baseline = baseline_rates(args.baseline) if args.baseline is not None else None
        guard = _guard(args.with_guard) if args.with_guard is not None else None
        guard_name = str(args.with_guard) if args.with_guard is not None else None
        if not is_url:
            run, url, model, local = _probe_local(args, settings, guard)
        else:
            key = read_api_key(args.api_key_file) if args.api_key_file is not None else None
            if args.unsafe_plain_http:
                print("airlock probe: warning: --unsafe-plain-http", file=sys.stderr)
            target = Target(args.target, args.model, key, args.ca, args.timeout, args.unsafe_plain_http)
            with ChatClient(target, max_tokens=budget.max_tokens, seed=settings.seed) as chat:
                run = probe(chat, settings, guard=guard)
            url, model, local = args.target, args.model, None
        report = report_json(
            run, target=url, model=model, worst_count=args.worst, guard=guard_name, local=local
        )
        regressions: list[dict[str, Any]] = []
        if baseline is not None:
            regressions = [
                {
                    "family": r.family,
                    "reason": r.reason,
                    "baseline_high": r.baseline_high,
                    "current": r.current_rate,
                }
                for r in compare(baseline, current_rates(run))
            ]
            report["regression"] = {"baseline": str(args.baseline), "regressions": regressions}
        # ASCII only: replies are hostile, and JSON leaves DEL, C1 controls (U+009B is CSI to a UTF-8
        # terminal) and bidi overrides raw; as escapes they cannot act on the terminal that shows them
        text = json.dumps(report, indent=2, ensure_ascii=True) + "\n"
        if args.json is not None:
            write_output(args.json, text)
        if args.sarif is not None:
            write_output(args.sarif, json.dumps(render_sarif(report), indent=2) + "\n")
        if args.html is not None:
            write_output(args.html, render_html(report))
        sys.stdout.write(text if args.format == "json" else render_text(report, regressions))
        return EXIT_REGRESSION if regressions else 0


#: flags that only mean something for one kind of target
_URL_FLAGS: Final = (
    ("api_key_file", "--api-key-file"),
    ("ca", "--ca"),
    ("unsafe_plain_http", "--unsafe-plain-http"),
)
_LOCAL_FLAGS: Final = (
    ("level", "--level"),
    ("threads", "--threads"),
    ("load_timeout", "--load-timeout"),
    ("expect", "--expect"),
    ("allow", "--allow"),
    ("unsafe_allow_suspicious", "--unsafe-allow-suspicious"),
    ("unsafe_skip_scan", "--unsafe-skip-scan"),
    ("unsafe_weaker_sandbox", "--unsafe-weaker-sandbox"),
)
#: the default --load-timeout: a model load on a loaded 2-core machine takes minutes
_LOAD_SECONDS: Final = 600.0


def _check_flags(args: argparse.Namespace, is_url: bool) -> None:
    """A flag of the other kind of target is a usage error, never silently ignored."""
    wrong = _LOCAL_FLAGS if is_url else _URL_FLAGS
    given = [flag for dest, flag in wrong if getattr(args, dest) not in (None, False)]
    if given:
        kind = "a local model" if is_url else "a URL target"
        raise UsageError(f"{', '.join(given)}: only for {kind}")
    if is_url and args.model is None:
        raise UsageError("--model is required with a URL target (the model name sent in each request)")
    if args.threads is not None and not 1 <= args.threads <= 256:
        raise UsageError(f"--threads must be in 1..256, got {args.threads}")
    if args.load_timeout is not None and not 1 <= args.load_timeout <= 86_400:
        raise UsageError(f"--load-timeout must be in [1, 86400] seconds, got {args.load_timeout}")


def _probe_local(args: argparse.Namespace, settings: Any, guard: Any) -> tuple[Any, str, str, dict[str, str]]:
    """Gate the GGUF file or Hugging Face folder, load it in a sandboxed job, probe it there:
    (run, url, model, local)."""
    from airlock._cli._extras import install_hint, missing_extras

    missing = missing_extras(("sandbox", "text"))
    if missing:
        raise UsageError(f"a local TARGET needs the {', '.join(missing)} extras: {install_hint(missing)}")
    from airlock.policy import Policy
    from airlock.probe import probe
    from airlock.probe._local import LocalChat, describe, gate_local
    from airlock.sandbox import SandboxLevel, SandboxPolicy
    from airlock.sandbox._policy import SandboxLimits

    for on, what in (
        (args.unsafe_weaker_sandbox, "--unsafe-weaker-sandbox: missing layers will NOT stop the run"),
        (args.unsafe_skip_scan, "--unsafe-skip-scan: the static scan gate is OFF"),
        (args.unsafe_allow_suspicious, "--unsafe-allow-suspicious: a SUSPICIOUS model will be loaded"),
    ):
        if on:
            print(f"airlock probe: WARNING: {what}", file=sys.stderr)
    load = args.load_timeout if args.load_timeout is not None else _LOAD_SECONDS
    policy = SandboxPolicy(
        level=SandboxLevel(args.level or "standard"),
        # wall_seconds bounds the load; each request has its own, shorter deadline (--timeout)
        limits=SandboxLimits(wall_seconds=load, start_seconds=load, threads=args.threads or 1),
        unsafe_weaker_sandbox=args.unsafe_weaker_sandbox,
    )
    path = Path(args.target)
    gated = gate_local(
        path,
        max_bytes=policy.limits.memory_bytes,
        scan_policy=Policy(allow=frozenset(args.allow), sources=("--allow",)) if args.allow else None,
        expect=args.expect,
        unsafe_allow_suspicious=args.unsafe_allow_suspicious,
        unsafe_skip_scan=args.unsafe_skip_scan,
    )
    with gated:
        model = describe(path, gated)
        with LocalChat(gated, policy, max_tokens=settings.budget.max_tokens, seed=settings.seed) as chat:
            run = probe(chat, settings, guard=guard)
            layers = chat.layers
    local = {"digest": model.digest, "sandbox": layers}
    return run, model.uri, args.model or path.name, local


def _guard(path: Path) -> Any:
    """The guard of a TOML file: its top-level table, or its ``[guard]`` table if that is all it holds."""
    import tomllib

    from airlock.guard import Guard, config_from_table

    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_GUARD_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read --with-guard {path}: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_GUARD_BYTES:
        raise UsageError(f"--with-guard {path} is larger than {_MAX_GUARD_BYTES} bytes")
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"--with-guard {path} is not TOML: {exc}") from exc
    if set(table) == {"guard"} and isinstance(table["guard"], dict):
        table = table["guard"]
    return Guard(config_from_table(table, f"--with-guard {path}"))


COMMAND = ProbeCommand()
