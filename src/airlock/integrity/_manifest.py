"""Manifests: every file of a model with its size and digest (or shard digests), in canonical order.

A manifest is built by :func:`build_manifest` from a walk, and rendered to JSON (format
``airlock.manifest/v1``, documented in docs/integrity.md) or to ``sha256sum``-style text. Its
``resources`` are exactly the OMS (OpenSSF model signing) resource list for the same parameters, and
``root_digest`` is the OMS subject digest: sha256 over the raw resource digests in order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from airlock.errors import LimitError
from airlock.integrity._digest import Range, hash_ranges
from airlock.integrity._params import HashLimits, HashParams, Method, check_shard_size
from airlock.integrity._walk import FileRef, Tree

__all__ = [
    "MANIFEST_FORMAT",
    "FileEntry",
    "Manifest",
    "Resource",
    "ShardDigest",
    "build_manifest",
    "escape_text_path",
]

MANIFEST_FORMAT: Final = "airlock.manifest/v1"


@dataclass(frozen=True)
class ShardDigest:
    """Digest of bytes ``[start, end)`` of a file."""

    start: int
    end: int
    digest: str


@dataclass(frozen=True)
class FileEntry:
    """One file: canonical relative POSIX path, size in bytes, and its digest (files) or shards."""

    path: str
    size: int
    #: hex digest of the whole file (method files), else None
    digest: str | None
    #: digests of consecutive slices (method shards); empty for files, and for an empty file
    shards: tuple[ShardDigest, ...] = ()


@dataclass(frozen=True)
class Resource:
    """One OMS resource: a whole file, or one shard named ``path:start:end``."""

    name: str
    digest: str


@dataclass(frozen=True)
class Manifest:
    """Every file of a model with its digest, and the parameters that made them."""

    #: informative only (the folder's or file's own name); never part of any comparison
    name: str
    params: HashParams
    files: tuple[FileEntry, ...]

    def resources(self) -> Iterator[Resource]:
        for entry in self.files:
            if self.params.method is Method.FILES:
                assert entry.digest is not None
                yield Resource(entry.path, entry.digest)
            else:
                for shard in entry.shards:
                    yield Resource(f"{entry.path}:{shard.start}:{shard.end}", shard.digest)

    @property
    def root_digest(self) -> str:
        """sha256 over the raw bytes of every resource digest, in order (the OMS subject digest)."""
        hasher = hashlib.sha256()
        for resource in self.resources():
            hasher.update(bytes.fromhex(resource.digest))
        return hasher.hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_json(self) -> str:
        """The stable machine form (docs/integrity.md): sorted, deterministic, ends with a newline."""
        files: list[dict[str, object]] = []
        for entry in self.files:
            item: dict[str, object] = {"path": entry.path, "size": entry.size}
            if self.params.method is Method.FILES:
                item["digest"] = entry.digest
            else:
                item["shards"] = [{"start": s.start, "end": s.end, "digest": s.digest} for s in entry.shards]
            files.append(item)
        document = {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "parameters": {
                "algorithm": self.params.algorithm.value,
                "method": self.params.method.value,
                "shard_size": self.params.shard_size,
                "allow_symlinks": self.params.allow_symlinks,
                "excluded": list(self.params.excluded),
            },
            "root_digest": {"sha256": self.root_digest},
            "files": files,
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

    def to_text(self) -> str:
        """``sha256sum``-style lines (``HEX  path``); readable back as a lock file for method files."""
        names = [(self.name if r.name == "." else r.name, r.digest) for r in self.resources()]
        lines = [f"{_escape_prefix(name)}{digest}  {escape_text_path(name)}" for name, digest in names]
        return "".join(line + "\n" for line in lines)


def _escape_prefix(path: str) -> str:
    return "\\" if ("\\" in path or "\n" in path or "\r" in path) else ""


def escape_text_path(path: str) -> str:
    """Escape a name the way coreutils does in checksum lines (a leading backslash marks the line)."""
    if not _escape_prefix(path):
        return path
    return path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _ranges(files: tuple[FileRef, ...], params: HashParams, limits: HashLimits) -> list[Range]:
    if params.method is Method.FILES:
        return [Range(f, 0, f.size) for f in files]
    assert params.shard_size is not None
    check_shard_size(params.shard_size, limits, "hashing")
    # Count the ranges arithmetically before any is built.
    count = sum(-(-f.size // params.shard_size) for f in files)
    if count > limits.max_resources:
        raise LimitError(
            f"hashing: shard size {params.shard_size} makes {count} shards, more than {limits.max_resources} "
            "(limit max_resources); use a larger shard size"
        )
    out: list[Range] = []
    for f in files:
        # As OMS shards: [0, s), [s, 2s), ... the last one ends at the file size; empty files have none.
        out.extend(
            Range(f, start, min(start + params.shard_size, f.size))
            for start in range(0, f.size, params.shard_size)
        )
    return out


def build_manifest(tree: Tree, params: HashParams, limits: HashLimits) -> Manifest:
    """Hash every listed file of ``tree``; the caller has already dealt with ``tree.problems``."""
    ranges = _ranges(tree.files, params, limits)
    digests = hash_ranges(ranges, params.algorithm, limits)
    entries: list[FileEntry] = []
    if params.method is Method.FILES:
        entries = [FileEntry(r.file.rel, r.file.size, d) for r, d in zip(ranges, digests, strict=True)]
    else:
        by_path: dict[str, list[ShardDigest]] = {f.rel: [] for f in tree.files}
        for r, d in zip(ranges, digests, strict=True):
            by_path[r.file.rel].append(ShardDigest(r.start, r.end, d))
        entries = [FileEntry(f.rel, f.size, None, tuple(by_path[f.rel])) for f in tree.files]
    return Manifest(tree.name, params, tuple(entries))
