"""Sigstore keyless bundles (Fulcio certificate + Rekor v1 entry), verified offline against a trusted
root file. Nothing is fetched: the trusted root is what the caller supplies.

What is checked, in order: the Rekor entry's signed entry timestamp (SET) with a log key from the
trusted root, valid at the entry's integrated time; that the entry binds this envelope (dsse/0.0.1
body: payload sha256, signature, signing certificate); the signing certificate's chain to a
certificate authority of the trusted root at the integrated time, and its code-signing usage; the
identity (subject alternative name) and OIDC issuer extension against the expected values; the DSSE
signature. Not checked (documented gaps): the certificate's embedded SCTs and the inclusion proof's
signed checkpoint; the SET alone is the log's promise.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from airlock.errors import FormatError, IntegrityError
from airlock.integrity._keys import certificate_public_key, check_signature, verify_chain
from airlock.integrity._lock import load_json_document, read_bounded
from airlock.integrity._oms import Bundle
from airlock.integrity._params import HashLimits

__all__ = ["verify_sigstore_bundle"]

_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")


@dataclass(frozen=True)
class _Validity:
    start: datetime.datetime | None
    end: datetime.datetime | None

    def holds(self, when: datetime.datetime) -> bool:
        return (self.start is None or self.start <= when) and (self.end is None or when <= self.end)


@dataclass(frozen=True)
class _TrustedRoot:
    cas: tuple[tuple[tuple[x509.Certificate, ...], _Validity], ...]
    logs: dict[bytes, tuple[ec.EllipticCurvePublicKey, _Validity]]


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what} is not valid base64: {exc}") from exc


def _time(value: object, what: str) -> datetime.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FormatError(f"{what} must be an RFC 3339 time string")
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError as exc:
        raise FormatError(f"{what}: {exc}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _validity(obj: object, what: str) -> _Validity:
    if obj is None:
        return _Validity(None, None)
    if not isinstance(obj, dict):
        raise FormatError(f"{what}: validFor must be an object")
    return _Validity(_time(obj.get("start"), what), _time(obj.get("end"), what))


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{what} must be an object")
    return value


def _load_root(path: str | os.PathLike[str], limits: HashLimits) -> _TrustedRoot:
    what = f"trusted root {os.path.basename(os.fspath(path))}"
    doc = _dict(load_json_document(read_bounded(path, limits.max_document_bytes, "trusted root"), what), what)
    cas = []
    for raw_ca in doc.get("certificateAuthorities") or []:
        ca = _dict(raw_ca, f"{what}: certificate authority")
        chain = _dict(ca.get("certChain"), f"{what}: certChain").get("certificates") or []
        try:
            certs = tuple(
                x509.load_der_x509_certificate(_b64(_dict(c, what).get("rawBytes"), what)) for c in chain
            )
        except ValueError as exc:
            raise FormatError(f"{what}: a CA certificate does not parse: {exc}") from exc
        if certs:
            cas.append((certs, _validity(ca.get("validFor"), what)))
    logs: dict[bytes, tuple[ec.EllipticCurvePublicKey, _Validity]] = {}
    for raw_log in doc.get("tlogs") or []:
        log = _dict(raw_log, f"{what}: tlog")
        public = _dict(log.get("publicKey"), f"{what}: tlog publicKey")
        try:
            key = serialization.load_der_public_key(_b64(public.get("rawBytes"), what))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise FormatError(f"{what}: a log key does not parse: {exc}") from exc
        if isinstance(key, ec.EllipticCurvePublicKey):
            key_id = _b64(_dict(log.get("logId"), f"{what}: logId").get("keyId"), what)
            logs[key_id] = (key, _validity(public.get("validFor"), what))
    if not cas or not logs:
        raise FormatError(f"{what}: needs at least one certificate authority and one EC transparency log key")
    return _TrustedRoot(tuple(cas), logs)


def _int(value: object, what: str) -> int:
    # protobuf JSON writes int64 as strings
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise FormatError(f"{what} must be a non-negative integer, got {value!r}")


def _check_entry(
    entry: dict[str, Any], root: _TrustedRoot, bundle: Bundle, leaf_pem: bytes
) -> datetime.datetime:
    """Verify one Rekor entry; return its (now trusted) integrated time."""
    key_id = _b64(_dict(entry.get("logId"), "tlog entry logId").get("keyId"), "tlog entry keyId")
    log_index = _int(entry.get("logIndex"), "tlog entry logIndex")
    integrated = _int(entry.get("integratedTime"), "tlog entry integratedTime")
    body_b64 = entry.get("canonicalizedBody")
    body = _b64(body_b64, "tlog entry canonicalizedBody")
    promise = entry.get("inclusionPromise")
    if not isinstance(promise, dict):
        raise IntegrityError("sigstore check: the log entry has no signed entry timestamp (inclusionPromise)")
    set_signature = _b64(promise.get("signedEntryTimestamp"), "signedEntryTimestamp")
    log = root.logs.get(key_id)
    if log is None:
        raise IntegrityError(f"sigstore check: log {key_id.hex()} is not in the trusted root")
    key, validity = log
    when = datetime.datetime.fromtimestamp(integrated, datetime.UTC)
    canonical = json.dumps(
        {"body": body_b64, "integratedTime": integrated, "logID": key_id.hex(), "logIndex": log_index},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    try:
        key.verify(set_signature, canonical, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise IntegrityError(
            "sigstore check: the signed entry timestamp does not verify with the log key"
        ) from exc
    if not validity.holds(when):
        raise IntegrityError(f"sigstore check: log key not valid at the entry's time {when.isoformat()}")
    kind = _dict(entry.get("kindVersion"), "tlog entry kindVersion")
    parsed = _dict(load_json_document(body, "tlog entry body"), "tlog entry body")
    if (kind.get("kind"), kind.get("version")) != ("dsse", "0.0.1") or parsed.get("kind") != "dsse":
        raise IntegrityError(
            f"sigstore check: log entry kind expected dsse/0.0.1, got {kind.get('kind')}/{kind.get('version')}"
        )
    spec = _dict(parsed.get("spec"), "tlog entry spec")
    payload_hash = _dict(spec.get("payloadHash"), "payloadHash")
    expected_hash = hashlib.sha256(bundle.payload).hexdigest()
    if payload_hash.get("algorithm") != "sha256" or payload_hash.get("value") != expected_hash:
        raise IntegrityError(
            f"sigstore check: log entry payload hash expected sha256:{expected_hash} got {payload_hash.get('value')}"
        )
    want = [
        {
            "signature": base64.b64encode(bundle.signature).decode(),
            "verifier": base64.b64encode(leaf_pem).decode(),
        }
    ]
    if spec.get("signatures") != want:
        raise IntegrityError("sigstore check: the log entry records another signature or certificate")
    return when


def _identities(leaf: x509.Certificate) -> list[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        *san.get_values_for_type(x509.RFC822Name),
        *san.get_values_for_type(x509.UniformResourceIdentifier),
    ]


def _issuer(leaf: x509.Certificate) -> str | None:
    for oid in (_ISSUER_V2, _ISSUER_V1):
        try:
            value = leaf.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        if oid == _ISSUER_V2 and len(raw) >= 2 and raw[0] == 0x0C:  # DER UTF8String, short form
            raw = raw[2:]
        return raw.decode("utf-8", "replace")
    return None


def verify_sigstore_bundle(
    bundle: Bundle,
    message: bytes,
    trust_root: str | os.PathLike[str],
    *,
    identity: str,
    issuer: str,
    limits: HashLimits,
) -> str:
    """Verify a keyless bundle offline; return a description of the signer. See the module docstring."""
    root = _load_root(trust_root, limits)
    if not bundle.certificates:
        raise IntegrityError("sigstore check: the bundle has no signing certificate")
    if not bundle.tlog_entries:
        raise IntegrityError("sigstore check: the bundle has no transparency log entry")
    try:
        leaf = x509.load_der_x509_certificate(bundle.certificates[0])
    except ValueError as exc:
        raise IntegrityError(f"sigstore check: the signing certificate does not parse: {exc}") from exc
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
    when = _check_entry(bundle.tlog_entries[0], root, bundle, leaf_pem)
    errors = []
    for chain, validity in root.cas:
        if not validity.holds(when):
            continue
        try:
            verify_chain(bundle.certificates[0], bundle.certificates[1:], [chain[-1]], chain[:-1], at=when)
            break
        except IntegrityError as exc:
            errors.append(str(exc))
    else:
        raise IntegrityError(
            f"sigstore check: no trusted CA issued the signing certificate at {when.isoformat()}: {errors}"
        )
    names = _identities(leaf)
    if identity not in names:
        raise IntegrityError(f"sigstore check: identity expected {identity!r} got {names}")
    got_issuer = _issuer(leaf)
    if got_issuer != issuer:
        raise IntegrityError(f"sigstore check: OIDC issuer expected {issuer!r} got {got_issuer!r}")
    check_signature(certificate_public_key(leaf), bundle.signature, message, f"the certificate of {identity}")
    return f"sigstore identity {identity} (issuer {issuer}), logged at {when.isoformat()}"
