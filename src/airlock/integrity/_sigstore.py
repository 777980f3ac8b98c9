"""Sigstore keyless bundles (Fulcio certificate + Rekor entry), verified offline against a trusted root."""

from __future__ import annotations

import os

from airlock.errors import UsageError
from airlock.integrity._oms import Bundle
from airlock.integrity._params import HashLimits

__all__ = ["verify_sigstore_bundle"]


def verify_sigstore_bundle(
    bundle: Bundle,
    message: bytes,
    trust_root: str | os.PathLike[str],
    *,
    identity: str,
    issuer: str,
    limits: HashLimits,
) -> str:
    raise UsageError("Sigstore keyless verification (--trust-root) is not available in this version yet")
