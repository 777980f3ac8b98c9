"""Sigstore keyless bundles, verified offline by sigstore-python against a trusted root file.

airlock does not implement Sigstore verification itself: ``sigstore`` (the reference Python
client, an optional extra: ``pip install 'model-airlock[sigstore]'``) checks the bundle against the
trusted root the caller supplies, and nothing is fetched. It checks the Rekor entry's inclusion
proof and signed checkpoint, its signed entry timestamp, RFC 3161 timestamps when present, the
certificate's embedded SCTs against the trusted root's CT logs, the chain to a Fulcio CA of the
trusted root at the verified time, the identity and OIDC issuer, the DSSE signature, and that the
log entry binds this envelope. airlock then reads the statement from the payload sigstore verified.
"""

from __future__ import annotations

import os

from airlock.errors import FormatError, IntegrityError, UsageError
from airlock.integrity._lock import read_bounded
from airlock.integrity._params import HashLimits

__all__ = ["verify_sigstore_bundle"]

_EXTRA = "pip install 'model-airlock[sigstore]'"


def verify_sigstore_bundle(
    raw_bundle: bytes,
    trust_root: str | os.PathLike[str],
    *,
    identity: str,
    issuer: str,
    limits: HashLimits,
) -> tuple[str, bytes, str]:
    """Verify a keyless bundle offline; return (payload type, payload, description of the signer)."""
    try:
        from sigstore.errors import Error as SigstoreError
        from sigstore.models import Bundle, TrustedRoot
        from sigstore.verify import Verifier, policy
    except ImportError as exc:
        raise UsageError(f"Sigstore keyless verification needs the sigstore package: {_EXTRA}") from exc
    raw_root = read_bounded(trust_root, limits.max_document_bytes, "trusted root", pipe=True)
    try:
        from sigstore_models.trustroot.v1 import TrustedRoot as _RootMessage

        root = TrustedRoot(_RootMessage.from_json(raw_root))
    except (SigstoreError, ValueError) as exc:
        raise FormatError(
            f"trusted root {os.fspath(trust_root)} is not a Sigstore trusted root: {exc}"
        ) from exc
    try:
        bundle = Bundle.from_json(raw_bundle)
    except (SigstoreError, ValueError) as exc:
        raise IntegrityError(
            f"sigstore check: the bundle is not a verifiable Sigstore bundle: {exc}"
        ) from exc
    try:
        verifier = Verifier(trusted_root=root)
        payload_type, payload = verifier.verify_dsse(
            bundle, policy.Identity(identity=identity, issuer=issuer)
        )
    except (SigstoreError, ValueError) as exc:
        raise IntegrityError(f"sigstore check: {exc}") from exc
    entry_time = bundle.log_entry._inner.integrated_time
    when = f", logged at integrated time {entry_time}" if entry_time else ""
    return payload_type, payload, f"sigstore identity {identity} (issuer {issuer}){when}"
