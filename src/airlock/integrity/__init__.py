"""Integrity of model artifacts: manifests, lock files and OMS (OpenSSF model signing) signatures.

Public API (pinned by ``tests/integrity/test_public_api.py``)::

    hash(path, ...) -> Manifest          every file with its size and digest, canonical order
    sign(path, key=..., output=...)      write an OMS Sigstore bundle (in-toto statement in DSSE)
    verify(path, lock=... | signature=... | expect=...) -> Verified
                                         strict check; IntegrityError lists every problem

``verify`` returns the manifest of exactly the bytes it hashed; ``Verified.open(path)`` reopens one of
those files only if it is still the same file (device, inode, size, times), so a caller such as
``airlock scan --lock`` can go on to read exactly the verified bytes.
"""

from __future__ import annotations

from airlock.integrity._hash_api import hash, sign
from airlock.integrity._lock import LOCK_FORMAT
from airlock.integrity._manifest import MANIFEST_FORMAT, FileEntry, Manifest, ShardDigest
from airlock.integrity._params import Algorithm, HashLimits, HashParams, Method
from airlock.integrity._verify import TrustMode, Verified, verify

__all__ = [
    "LOCK_FORMAT",
    "MANIFEST_FORMAT",
    "Algorithm",
    "FileEntry",
    "HashLimits",
    "HashParams",
    "Manifest",
    "Method",
    "ShardDigest",
    "TrustMode",
    "Verified",
    "hash",
    "sign",
    "verify",
]
