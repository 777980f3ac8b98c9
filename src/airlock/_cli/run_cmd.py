"""``airlock run``: load (and optionally run) an untrusted model inside the sandbox."""

from __future__ import annotations

import argparse
import json
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np

from airlock._cli._sandboxed import (
    add_gate_arguments,
    add_text_arguments,
    context_message,
    generation_json,
    open_worker,
    text_request,
)
from airlock.errors import UsageError
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
        "--input/--output run one inference (.safetensors, or .json for small tensors); --prompt or "
        "--messages generate with a text model (GGUF) and print JSON {text, finish_reason, usage}. Exit 0 on "
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
        add_gate_arguments(parser)
        add_text_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        text = args.prompt is not None or args.messages is not None
        if text and (args.load_only or args.input is not None or args.output is not None):
            raise UsageError(
                "--prompt/--messages generate text; they do not go with --load-only, --input or --output"
            )
        if not text and not args.load_only and (args.input is None or args.output is None):
            raise UsageError(
                "give --load-only, both --input and --output, or --prompt/--messages for a text model"
            )
        request = text_request(args) if text else None
        inputs = _read_inputs(args.input) if args.input is not None else None
        with open_worker(args, "airlock run") as worker:
            info = worker.info  # job-supplied text in info is already escaped
            print(
                f"loaded {info.summary} ({info.kind}, runtime {info.runtime}) in the sandbox [{info.job_layers}]",
                file=sys.stderr if text else sys.stdout,
            )
            if request is not None:
                done = worker.generate(**request).read()
                if done.finish == "context":
                    raise UsageError(context_message(done, int(request["max_tokens"])))
                # JSON escapes every control character: nothing the model wrote reaches the terminal raw
                print(json.dumps(generation_json(done), ensure_ascii=True))
                return 0
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
