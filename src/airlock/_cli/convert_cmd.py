"""``airlock convert SRC -o DST``: a pickle checkpoint (or a Hugging Face folder) to safetensors."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from airlock._render.text import render as render_text
from airlock._scan.api import scan
from airlock.loading import convert
from airlock.policy import Policy
from airlock.results import Verdict

__all__ = ["COMMAND"]


@dataclass(frozen=True)
class ConvertCommand:
    name: str = "convert"
    help: str = "convert a pickle checkpoint or a Hugging Face folder to safetensors, running nothing"
    description: str = (
        "Scan SRC first and refuse it outright if anything is MALICIOUS (exit 1). Then read its tensors "
        "with airlock's own loader (no unpickler runs) and write safetensors: a file for a file; for a "
        "folder with sharded pytorch_model-*.bin and an index, model-*.safetensors and "
        "model.safetensors.index.json. Each output records the source's sha256 in its metadata and is "
        "written atomically. Exit codes: 0 converted, 1 malicious input, 2 error, refusal or usage. "
        "See docs/convert.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "src", metavar="SRC", help="checkpoint file (.bin .pt .pth .ckpt .npz ...) or model folder"
        )
        parser.add_argument(
            "-o",
            "--output",
            required=True,
            metavar="DST",
            help="safetensors file (for a file) or folder (for a folder)",
        )
        parser.add_argument("--force", action="store_true", help="replace DST files that already exist")
        parser.add_argument(
            "--allow",
            action="append",
            default=[],
            metavar="MODULE.QUALNAME",
            help="an inert class whose attributes may be read as a plain dict (repeatable), e.g. argparse.Namespace",
        )

    def run(self, args: argparse.Namespace) -> int:
        allow = frozenset(args.allow)
        report = scan(args.src, policy=Policy(allow=allow))
        if report.verdict is Verdict.MALICIOUS:
            sys.stderr.write(render_text(report))
            print(f"airlock convert: {args.src} is MALICIOUS; nothing written", file=sys.stderr)
            return 1
        results = convert(args.src, args.output, force=args.force, allow=allow)
        for item in results:
            print(
                f"{item.output}: {len(item.tensors)} tensors, {item.nbytes} bytes (source sha256 {item.source_sha256})"
            )
        return 0


COMMAND = ConvertCommand()
