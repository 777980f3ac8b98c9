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


#: bytes the JSON text of ``--output out.json`` may have: JSON is for small tensors, the same
#: bound as ``--input`` (what ``airlock run`` writes, it can read back)
MAX_JSON_OUTPUT = _MAX_JSON_INPUT
#: dtype kinds JSON holds: bool, integers, real floats (bfloat16 is kind "V" and handled by name)
_JSON_KINDS = frozenset("biuf")
#: dtypes ``safetensors.numpy`` writes, of those the channel carries (not complex128, not bytes)
_SAFETENSORS_DTYPES = frozenset(
    ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16",
     "float32", "float64", "complex64", "bfloat16"]
)  # fmt: skip
#: a name that is the safetensors header's metadata key, not a tensor: writing it corrupts the file
_SAFETENSORS_RESERVED = "__metadata__"
_NO_BYTES = "neither output format holds byte strings (use airlock.sandbox.Worker from Python)"


def _refuse(path: Path, name: str, why: str, hint: str) -> UsageError:
    return UsageError(f"--output {path}: the model's output {printable(name, 200)!r} {why}; {hint}")


def json_outputs(path: Path, outputs: dict[str, Any], cap: int = MAX_JSON_OUTPUT) -> str:
    """The JSON text of ``outputs`` (every name, dtype, value and size came from the job), or
    :class:`UsageError` naming the first output JSON cannot hold: not a bool, integer or real
    float (complex, byte strings), a NaN or infinity (which ``json`` would write as the invalid
    token ``NaN``), or a text above ``cap`` bytes. The size is bounded *before* any Python list
    is made: every element takes at least two characters (a digit and a separator)."""
    hint = "write .safetensors instead"
    elements = 0
    for name, value in outputs.items():
        dtype = getattr(value, "dtype", None)
        if not isinstance(value, np.ndarray) or dtype is None or dtype.kind == "O":
            raise _refuse(path, name, "is a tensor of byte strings", _NO_BYTES)
        if dtype.kind not in _JSON_KINDS and dtype.name != "bfloat16":
            raise _refuse(path, name, f"is {dtype.name}, which JSON cannot hold", hint)
        elements += value.size
        if 2 * elements > cap:
            raise UsageError(
                f"--output {path}: the model's outputs have more than {cap // 2} elements, more than "
                f"JSON output may hold ({cap} bytes); {hint}"
            )
        if (dtype.kind == "f" or dtype.name == "bfloat16") and not bool(
            np.isfinite(value.astype(np.float64)).all()
        ):
            raise _refuse(path, name, "holds NaN or infinity, which JSON cannot hold", hint)
    text = json.dumps({name: value.tolist() for name, value in outputs.items()}, allow_nan=False)
    if len(text) > cap:
        raise UsageError(f"--output {path}: the outputs take {len(text)} bytes of JSON, above {cap}; {hint}")
    return text


def _write_outputs(path: Path, outputs: dict[str, Any]) -> None:
    """Write what the job answered: every output is checked against what the format can hold
    *before* the file is created (a name, dtype or value the job chose never leaves a corrupt
    file or a traceback)."""
    if path.suffix == ".json":
        path.write_text(json_outputs(path, outputs), encoding="utf-8")
        return
    hint = "write .json, or change the model"
    for name, value in outputs.items():
        if name == _SAFETENSORS_RESERVED:
            raise _refuse(path, name, "is the name safetensors keeps for its metadata", hint)
        dtype = getattr(value, "dtype", None)
        if not isinstance(value, np.ndarray) or dtype is None or dtype.name not in _SAFETENSORS_DTYPES:
            if dtype is None or dtype.kind == "O":
                raise _refuse(path, name, "is a tensor of byte strings", _NO_BYTES)
            raise _refuse(path, name, f"is {dtype.name}, which safetensors cannot hold", hint)
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
