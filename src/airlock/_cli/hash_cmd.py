"""``airlock hash PATH``: a manifest of every file (canonical path, size, digest), deterministic."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from airlock._cli.base import write_output
from airlock.errors import IntegrityError
from airlock.integrity import Algorithm, HashLimits, Manifest, hash
from airlock.integrity._lock import render_lock

__all__ = ["COMMAND", "add_hash_options", "limits_from_args"]


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_hash_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``hash`` and ``sign``: they decide what the manifest holds."""
    parser.add_argument("path", metavar="PATH", help="model file or folder")
    parser.add_argument(
        "--algorithm",
        choices=[a.value for a in Algorithm],
        default=Algorithm.SHA256.value,
        help="digest algorithm (default sha256; blake3 needs the 'integrity' extra)",
    )
    parser.add_argument(
        "--shard-size",
        type=_positive_int,
        metavar="BYTES",
        help="hash each file in slices of BYTES, in parallel (OMS 'shards' method); default: whole files",
    )
    parser.add_argument(
        "--allow-symlinks",
        action="store_true",
        help="follow symbolic links to regular files (recorded in the manifest); default: refuse them",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="RELPATH",
        help="leave this relative path (file or folder) out of the manifest; recorded; repeatable",
    )
    parser.add_argument(
        "--workers", type=_positive_int, metavar="N", help="hashing threads (default: CPU count)"
    )


def limits_from_args(args: argparse.Namespace) -> HashLimits:
    return HashLimits(workers=args.workers) if args.workers else HashLimits()


#: Problems that are I/O failures (exit 2), not properties of the model (exit 1).
_IO_PROBLEMS = ("unreadable", "file changed while hashing")


def _render(manifest: Manifest, fmt: str) -> str:
    if fmt == "json":
        return manifest.to_json()
    if fmt == "lock":
        return render_lock(manifest)
    return manifest.to_text()


@dataclass(frozen=True)
class HashCommand:
    name: str = "hash"
    help: str = "print a manifest (path, size, digest) of every file of a model"
    description: str = (
        "Hash every regular file under PATH (or PATH itself) with bounded memory, in parallel, and print "
        "a manifest in canonical order. Symbolic links are refused unless --allow-symlinks; special "
        "files always are. Exit codes: 0 done, 1 the model holds files that cannot be hashed "
        "(symlinks, special files), 2 error (unreadable file, unwritable -o) or usage. Formats are documented in docs/integrity.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_hash_options(parser)
        parser.add_argument(
            "--format",
            choices=["text", "json", "lock"],
            default="text",
            help="text: sha256sum-style lines; json: the full manifest; lock: an airlock.lock/v1 file",
        )
        parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")

    def run(self, args: argparse.Namespace) -> int:
        try:
            manifest = hash(
                args.path,
                algorithm=args.algorithm,
                shard_size=args.shard_size,
                allow_symlinks=args.allow_symlinks,
                exclude=args.exclude,
                limits=limits_from_args(args),
            )
        except IntegrityError as exc:
            print(f"airlock hash: {exc}", file=sys.stderr)
            # 1 means "holds files that cannot be hashed" (links, special files); a file that
            # could not be read, or changed while it was read, is an error like any other I/O.
            problems = getattr(exc, "problems", ()) or (str(exc),)
            return 2 if any(p.startswith(_IO_PROBLEMS) for p in problems) else 1
        text = _render(manifest, args.format)
        if args.output:
            write_output(args.output, text)
        else:
            sys.stdout.write(text)
        return 0


COMMAND = HashCommand()
