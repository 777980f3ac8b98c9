"""API keys: 256-bit random tokens, shown once, stored as a SHA-256 hash, compared in constant time.

A token reads ``alk_<key id>_<secret>``: the key id (public, 64 random bits) finds the row; the
secret (256 random bits, URL-safe base64) is never stored. SHA-256 without a salt is enough here
because the secret is uniformly random and long: there is no dictionary to precompute.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Final

from airlock.errors import UsageError
from airlock.gateway._store import KeyRecord, Store

__all__ = ["Authenticated", "authenticate", "create_key", "hash_token"]

_TOKEN: Final = re.compile(r"\Aalk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})\Z")
#: compared against when the key id is unknown, so both paths do the same work
_DUMMY: Final = hashlib.sha256(b"airlock: no such key").digest()


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def create_key(store: Store, tenant: str, scopes: tuple[str, ...] = ()) -> tuple[KeyRecord, str]:
    """Make a key for ``tenant``; return its record and the token (the only time it exists in clear)."""
    if store.tenant(tenant) is None:
        raise UsageError(f"no tenant named {tenant!r} (create it with: airlock tenant add)")
    key_id = secrets.token_hex(8)
    token = f"alk_{key_id}_{secrets.token_urlsafe(32)}"
    record = KeyRecord(key_id, tenant, hash_token(token), tuple(sorted(set(scopes))), time.time(), None)
    store.add_key(record)
    return record, token


@dataclass(frozen=True)
class Authenticated:
    tenant: str
    key_id: str
    scopes: tuple[str, ...]


def authenticate(store: Store, header: str | None) -> Authenticated | None:
    """The key behind an ``Authorization: Bearer`` header, or None (missing, malformed, wrong, revoked)."""
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    match = _TOKEN.match(token.strip()) if scheme.lower() == "bearer" else None
    if match is None:
        return None
    record = store.key(match.group(1))
    given = hash_token(token.strip())
    stored = record.token_hash if record is not None else _DUMMY
    if not hmac.compare_digest(given, stored) or record is None or record.revoked is not None:
        return None
    return Authenticated(record.tenant, record.key_id, record.scopes)
