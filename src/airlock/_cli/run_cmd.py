"""``airlock run``: load (and optionally run) an untrusted model inside the sandbox."""

from __future__ import annotations

import argparse
import json
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np

from airlock.errors import UsageError
from airlock.sandbox import SandboxLevel, SandboxPolicy, Worker
from airlock.sandbox._messages import printable
from airlock.sandbox._runtimes import RUNTIMES

__all__ = ["COMMAND"]

_MAX_JSON_INPUT = 16 << 20


def _read_inputs(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except OSError as exc:
        raise UsageError(f"--input {path}: {exc.strerror}") from exc
    if not regular:  # a FIFO would block the read forever
        raise UsageError(f"--input {path} is not a regular file")
    if path.suffix == ".json":
        if path.stat().st_size > _MAX_JSON_INPUT:
            raise UsageError(
                f"--input {path}: JSON inputs are for small tensors (at most {_MAX_JSON_INPUT} bytes)"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise UsageError(f"--input {path}: expected a JSON object of name -> nested number lists")
        return {str(k): np.asarray(v, dtype=np.float32) for k, v in data.items()}
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


def _write_outputs(path: Path, outputs: dict[str, np.ndarray[Any, Any]]) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps({k: v.tolist() for k, v in outputs.items()}), encoding="utf-8")
        return
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in outputs.items()}, str(path))


class RunCommand:
    name = "run"
    help = "load or run an untrusted model inside the OS sandbox"
    description = (
        "Open MODEL once into a sealed private copy, check it (--expect), scan that copy (only CLEAN "
        "passes unless --unsafe-allow-suspicious), then load the same copy with its framework's own "
        "loader inside the sandbox (see `airlock doctor` and docs/sandbox.md). --load-only prints the tensors found; "
        "--input/--output run one inference (.safetensors, or .json for small tensors). Exit 0 on "
        "success, 2 on any error."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "model", type=Path, metavar="MODEL", help="model file (weights file with --definition)"
        )
        parser.add_argument("--input", type=Path, help="inputs: .safetensors, or .json {name: nested lists}")
        parser.add_argument("--output", type=Path, help="where to write outputs (.safetensors or .json)")
        parser.add_argument("--load-only", action="store_true", help="load the model and list its tensors")
        parser.add_argument(
            "--runtime",
            choices=[r.name for r in RUNTIMES],
            help="runtime to use (default: told from content)",
        )
        parser.add_argument(
            "--definition",
            type=Path,
            help="trusted Python file defining build_model(); MODEL is then safetensors weights",
        )
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

    def run(self, args: argparse.Namespace) -> int:
        if not args.load_only and (args.input is None or args.output is None):
            raise UsageError("give --load-only, or both --input and --output")
        if args.unsafe_weaker_sandbox:
            print(
                "airlock run: WARNING: --unsafe-weaker-sandbox: missing layers will NOT stop the run",
                file=sys.stderr,
            )
        if args.unsafe_skip_scan:
            print("airlock run: WARNING: --unsafe-skip-scan: the static scan gate is OFF", file=sys.stderr)
        if args.unsafe_allow_suspicious:
            print(
                "airlock run: WARNING: --unsafe-allow-suspicious: a SUSPICIOUS model will be loaded",
                file=sys.stderr,
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
        inputs = _read_inputs(args.input) if args.input is not None else None
        with gated, Worker(gated, runtime=args.runtime, definition=args.definition, policy=policy) as worker:
            info = worker.info  # job-supplied text in info is already escaped
            print(
                f"loaded {info.summary} ({info.kind}, runtime {info.runtime}) in the sandbox [{info.job_layers}]"
            )
            if args.load_only:
                for name, array in worker.state_dict().items():
                    # names with control characters never get here (refused by the channel); escape anyway
                    shown = name if name.isprintable() else printable(name)
                    print(f"{shown}\t{array.dtype}\t{list(array.shape)}")
                return 0
            assert inputs is not None and args.output is not None
            outputs = worker.infer(inputs)
        _write_outputs(args.output, outputs)
        print(f"wrote {len(outputs)} output tensor(s) to {args.output}")
        return 0


COMMAND = RunCommand()
