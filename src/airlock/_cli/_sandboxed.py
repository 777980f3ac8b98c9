"""What ``airlock run`` and ``airlock chat`` share: the gate and sandbox options, opening a gated
model in a sandboxed worker, and the text-generation options and request."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airlock.errors import UsageError
from airlock.sandbox import SandboxLevel, SandboxPolicy, Worker
from airlock.sandbox._text import Generation

__all__ = [
    "add_gate_arguments",
    "add_text_arguments",
    "context_message",
    "generation_json",
    "open_worker",
    "read_messages",
    "text_request",
]

#: bytes a --messages file may have
MAX_MESSAGES_BYTES = 1 << 20


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox and gate options ``run`` and ``chat`` share."""
    parser.add_argument(
        "--level",
        choices=[v.value for v in SandboxLevel],
        default="standard",
        help="isolation level (see airlock doctor)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="wall-clock seconds per step (default 300)"
    )
    parser.add_argument(
        "--unsafe-weaker-sandbox",
        action="store_true",
        help="run even if layers the level needs are missing on this host (UNSAFE, warns loudly)",
    )
    parser.add_argument(
        "--expect", metavar="sha256:HEX", help="refuse MODEL unless its bytes have this digest"
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="MODULE.NAME",
        help="a callable the scan may treat as known (repeatable), as for `airlock scan --allow`",
    )
    parser.add_argument(
        "--unsafe-allow-suspicious",
        action="store_true",
        help="load a model the scan finds SUSPICIOUS (unknown callables) in the sandbox (UNSAFE, warns)",
    )
    parser.add_argument(
        "--unsafe-skip-scan",
        action="store_true",
        help="do not scan MODEL at all; the sandbox is then the only protection (UNSAFE, warns)",
    )


def add_text_arguments(parser: argparse.ArgumentParser, *, chat: bool = False) -> None:
    """Generation options (for a text model, runtime ``text-gguf``)."""
    if not chat:
        parser.add_argument("--prompt", help="text model: generate from this raw prompt (no chat template)")
        parser.add_argument(
            "--messages",
            type=Path,
            metavar="FILE",
            help='text model: a JSON list of {"role": system|user|assistant, "content": ...} rendered '
            "by the model's chat template inside the sandbox",
        )
    parser.add_argument("--system", help="text model: a system message put before the others")
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="text model: tokens to generate at most (default 256)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="text model: sampling temperature in [0, 2]; 0 (default) is greedy",
    )
    parser.add_argument("--top-p", type=float, default=1.0, help="text model: nucleus sampling in (0, 1]")
    parser.add_argument("--seed", type=int, help="text model: sampling seed (repeatable output)")
    parser.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="text model: stop before this text (up to 4)",
    )


def read_messages(path: Path) -> list[dict[str, str]]:
    """A --messages file: a regular file of at most 1 MiB holding a JSON list."""
    import os

    from airlock.sandbox._gate import open_regular

    fd = open_regular(path, "--messages")
    try:
        if os.fstat(fd).st_size > MAX_MESSAGES_BYTES:
            raise UsageError(f"--messages {path}: more than {MAX_MESSAGES_BYTES} bytes")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(MAX_MESSAGES_BYTES + 1)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--messages {path}: not JSON ({exc})") from exc
    if not isinstance(data, list):
        raise UsageError(f"--messages {path}: expected a JSON list of messages")
    return data


def text_request(args: argparse.Namespace, messages: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Keyword arguments for :meth:`Worker.generate` from the command line (checked when sent)."""
    prompt = getattr(args, "prompt", None)
    if messages is None and getattr(args, "messages", None) is not None:
        messages = read_messages(args.messages)
    if prompt is not None and messages is not None:
        raise UsageError("give --prompt or --messages, not both")
    if args.system is not None:
        if messages is None:
            raise UsageError("--system goes with --messages (or airlock chat), not with a raw --prompt")
        messages = [{"role": "system", "content": args.system}, *messages]
    request = {
        "messages": messages,
        "prompt": prompt,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
        "stop": list(args.stop),
    }
    from airlock.sandbox._text import build_request

    try:
        build_request(**request)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return request


def context_message(done: Generation, max_tokens: int) -> str:
    """Why a generation that ended with finish ``context`` produced nothing."""
    return (
        f"the prompt ({done.prompt_tokens} tokens) and max_tokens ({max_tokens}) do not fit the "
        "model's context: shorten the prompt or lower --max-tokens"
    )


def generation_json(done: Generation) -> dict[str, object]:
    """The ``airlock run --prompt`` output object."""
    return {
        "text": done.text,
        "finish_reason": done.finish,
        "usage": {
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
        },
    }


@contextmanager
def open_worker(args: argparse.Namespace, who: str, runtime: str | None = None) -> Iterator[Worker]:
    """Gate MODEL (open once, verify, scan the private copy) and load that copy in a sandboxed worker."""
    if args.unsafe_weaker_sandbox:
        print(
            f"{who}: WARNING: --unsafe-weaker-sandbox: missing layers will NOT stop the run", file=sys.stderr
        )
    if args.unsafe_skip_scan:
        print(f"{who}: WARNING: --unsafe-skip-scan: the static scan gate is OFF", file=sys.stderr)
    if args.unsafe_allow_suspicious:
        print(
            f"{who}: WARNING: --unsafe-allow-suspicious: a SUSPICIOUS model will be loaded", file=sys.stderr
        )
    from airlock.policy import Policy
    from airlock.sandbox._gate import gate
    from airlock.sandbox._policy import SandboxLimits

    policy = SandboxPolicy(
        level=SandboxLevel(args.level),
        limits=SandboxLimits(wall_seconds=args.timeout),
        unsafe_weaker_sandbox=args.unsafe_weaker_sandbox,
    )
    # one gate: the bytes checked and scanned here are the very bytes the job loads
    gated = gate(
        args.model,
        policy=Policy(allow=frozenset(args.allow), sources=("--allow",)) if args.allow else None,
        expect=args.expect,
        max_bytes=policy.limits.memory_bytes,
        unsafe_allow_suspicious=args.unsafe_allow_suspicious,
        unsafe_skip_scan=args.unsafe_skip_scan,
    )
    with (
        gated,
        Worker(
            gated,
            runtime=runtime or getattr(args, "runtime", None),
            definition=getattr(args, "definition", None),
            policy=policy,
        ) as worker,
    ):
        yield worker
