"""``airlock load PATH``: list the tensors airlock can load from a file (name, dtype, shape)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from airlock.loading import load

__all__ = ["COMMAND"]


@dataclass(frozen=True)
class LoadCommand:
    name: str = "load"
    help: str = "list the tensors of a model file, loaded without running anything"
    description: str = (
        "Load every tensor of PATH the way airlock.load does (scanner first, no unpickler) and print "
        "name, dtype and shape. Exit codes: 0 loaded, 2 refused, error or usage. See docs/convert.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", metavar="PATH", help="model file")
        parser.add_argument(
            "--allow",
            action="append",
            default=[],
            metavar="MODULE.QUALNAME",
            help="an inert class whose attributes may be read as a plain dict (repeatable)",
        )
        parser.add_argument("--format", choices=["text", "json"], default="text", help="output format")

    def run(self, args: argparse.Namespace) -> int:
        tensors = load(args.path, allow=args.allow)
        rows = [(name, str(arr.dtype), list(arr.shape)) for name, arr in tensors.items()]
        if args.format == "json":
            print(json.dumps([{"name": n, "dtype": d, "shape": s} for n, d, s in rows], indent=2))
        else:
            for name, dtype, shape in rows:
                print(f"{name}\t{dtype}\t{tuple(shape)}")
        return 0


COMMAND = LoadCommand()
