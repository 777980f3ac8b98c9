"""Hashing parameters and limits: what a manifest records about how it was made, and the bounds.

Everything here is frozen and validated at construction, so a bad value is a ``UsageError`` at the
call site rather than a surprise in the middle of hashing a 10 GB folder.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass
from typing import Final

from airlock.errors import UsageError

__all__ = ["Algorithm", "HashLimits", "HashParams", "Method", "check_shard_size"]

_KIB: Final = 1024
_MIB: Final = 1024 * _KIB


class Algorithm(enum.Enum):
    """Digest algorithms. The value is the name used in manifests, lock files and OMS signatures."""

    SHA256 = "sha256"
    #: BLAKE2b with a 64-byte digest (model-signing calls it ``blake2`` when hashing, ``blake2b`` in files)
    BLAKE2B = "blake2b"
    #: needs the optional ``blake3`` package (``pip install 'model-airlock[integrity]'``)
    BLAKE3 = "blake3"

    @property
    def digest_size(self) -> int:
        return 64 if self is Algorithm.BLAKE2B else 32

    @classmethod
    def parse(cls, name: str) -> Algorithm:
        """Read an algorithm name as found in manifests and signatures (``blake2`` is model-signing's alias)."""
        normalized = "blake2b" if name == "blake2" else name
        for member in cls:
            if member.value == normalized:
                return member
        known = ", ".join(m.value for m in cls)
        raise UsageError(f"unknown digest algorithm {name!r} (expected one of: {known})")


class Method(enum.Enum):
    """How files are cut into manifest resources (the OMS ``serialization.method``)."""

    #: one digest per file: what hub sha256 values and lock files hold
    FILES = "files"
    #: one digest per ``shard_size`` slice of each file: lets one big file hash on several cores
    SHARDS = "shards"


@dataclass(frozen=True)
class HashParams:
    """The parameters a manifest is made with; recorded in the manifest so it can be reproduced."""

    algorithm: Algorithm = Algorithm.SHA256
    method: Method = Method.FILES
    #: bytes per shard; only meaningful (and then required) for ``Method.SHARDS``
    shard_size: int | None = None
    #: follow symbolic links to regular files (off by default: a link can point anywhere)
    allow_symlinks: bool = False
    #: relative POSIX paths left out of the manifest (a directory leaves out everything under it)
    excluded: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method is Method.SHARDS:
            if self.shard_size is None or isinstance(self.shard_size, bool) or self.shard_size <= 0:
                raise UsageError(f"shard size must be a positive integer for shards, got {self.shard_size!r}")
        elif self.shard_size is not None:
            raise UsageError(f"shard size is only used with method shards, got {self.shard_size!r} for files")
        for path in self.excluded:
            if not path or path.startswith("/") or ".." in path.split("/") or "\\" in path:
                raise UsageError(
                    f"excluded path must be a relative POSIX path inside the folder, got {path!r}"
                )


@dataclass(frozen=True)
class HashLimits:
    """Bounds on one hashing run. Memory in use is about ``workers * chunk_size`` plus the file list."""

    #: entries under the root: regular files, folders, links and special files (as the scanner counts)
    max_files: int = 1_000_000
    #: directory nesting below the root
    max_depth: int = 64
    #: UTF-8 bytes of one relative path
    max_path_bytes: int = 4096
    #: bytes read per system call (and the buffer each worker owns)
    chunk_size: int = 2 * _MIB
    #: hashing threads (hashlib releases the GIL while it hashes)
    workers: int = dataclasses.field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 16)))
    #: bytes of a signature bundle or lock file read into memory
    max_document_bytes: int = 64 * _MIB
    #: resources (files or shards) listed in one signature or lock file, or hashed in one run
    max_resources: int = 4_000_000
    #: smallest shard size a run, a lock file or a signature may use: a smaller one is refused before
    #: any range is built (``shard_size: 1`` would make one object per byte)
    min_shard_size: int = 1 * _MIB

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UsageError(f"hash limit {field.name} must be a positive integer, got {value!r}")
        if not 4 * _KIB <= self.chunk_size <= 64 * _MIB:
            raise UsageError(f"hash limit chunk_size must be within 4 KiB..64 MiB, got {self.chunk_size}")


def check_shard_size(shard_size: int, limits: HashLimits, where: str) -> None:
    """LimitError when ``shard_size`` is below the floor ``limits.min_shard_size``."""
    if shard_size < limits.min_shard_size:
        from airlock.errors import LimitError

        raise LimitError(
            f"{where}: shard size {shard_size} is below the minimum of {limits.min_shard_size} bytes "
            "(limit min_shard_size); it would make one digest per few bytes"
        )
