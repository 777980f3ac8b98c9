"""Keys and certificates for the OMS key and certificate methods (ECDSA on P-256/P-384/P-521).

The hash that goes with each curve follows the Sigstore specs (as model-signing does): SHA-256 for
P-256, SHA-384 for P-384, SHA-512 for P-521. Certificate chains are validated by ``cryptography``'s
X.509 path builder against the caller's trust anchors only (never the system store).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID

from airlock.errors import IntegrityError, UsageError
from airlock.integrity._lock import read_bounded

__all__ = [
    "SigningKey",
    "check_signature",
    "key_hint",
    "load_certificates",
    "load_private_key",
    "load_public_key",
    "verify_chain",
]

_CURVE_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
_PEM_LIMIT = 1024 * 1024


def _curve_hash(key: ec.EllipticCurvePublicKey, where: str) -> hashes.HashAlgorithm:
    factory = _CURVE_HASH.get(key.curve.name)
    if factory is None:
        raise UsageError(f"{where}: curve {key.curve.name} not supported (expected P-256, P-384 or P-521)")
    return factory()


def key_hint(key: ec.EllipticCurvePublicKey) -> str:
    """The OMS key hint: sha256 of the public key's SubjectPublicKeyInfo PEM."""
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


@dataclass(frozen=True)
class SigningKey:
    key: ec.EllipticCurvePrivateKey

    def sign(self, message: bytes) -> bytes:
        public = self.key.public_key()
        return self.key.sign(message, ec.ECDSA(_curve_hash(public, "private key")))


def load_private_key(path: str | os.PathLike[str], password: bytes | None = None) -> SigningKey:
    data = read_bounded(path, _PEM_LIMIT, "private key", pipe=True)
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError as exc:  # encrypted without a password, or a password for a plain key
        raise UsageError(f"private key {os.fspath(path)}: {exc}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"private key {os.fspath(path)} is not a readable PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"private key {os.fspath(path)}: expected an EC key, got {type(key).__name__}")
    _curve_hash(key.public_key(), f"private key {os.fspath(path)}")
    return SigningKey(key)


def load_public_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePublicKey:
    data = read_bounded(path, _PEM_LIMIT, "public key", pipe=True)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"public key {os.fspath(path)} is not a readable PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UsageError(f"public key {os.fspath(path)}: expected an EC key, got {type(key).__name__}")
    _curve_hash(key, f"public key {os.fspath(path)}")
    return key


def load_certificates(paths: Sequence[str | os.PathLike[str]], what: str) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for path in paths:
        data = read_bounded(path, 16 * _PEM_LIMIT, what, pipe=True)
        try:
            out.extend(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            raise UsageError(f"{what} {os.fspath(path)} holds no readable PEM certificate: {exc}") from exc
    return out


def check_signature(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes, who: str) -> None:
    try:
        key.verify(signature, message, ec.ECDSA(_curve_hash(key, who)))
    except InvalidSignature as exc:
        raise IntegrityError(f"signature check: the DSSE signature does not verify with {who}") from exc


def _is_ca(_policy: xv.Policy, _cert: x509.Certificate, ext: x509.BasicConstraints | None) -> None:
    if ext is None or not ext.ca:
        raise ValueError("issuer is not a CA (basicConstraints ca=false or absent)")


def _may_sign_certs(_policy: xv.Policy, _cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
    if ext is not None and not ext.key_cert_sign:
        raise ValueError("issuer's keyUsage lacks keyCertSign")


def verify_chain(
    leaf_der: bytes,
    intermediates_der: Sequence[bytes],
    anchors: Sequence[x509.Certificate],
    extra_intermediates: Sequence[x509.Certificate] = (),
    *,
    at: datetime.datetime | None = None,
) -> x509.Certificate:
    """Validate the signing certificate up to one of ``anchors``; return it. Checks it may sign code.

    ``at`` is the validation time. Without a trusted timestamp (key/certificate methods) the time is
    the signing certificate's own ``notBefore``, as model-signing does: expiry after signing does
    not invalidate a signature, but the chain must have been valid when the certificate was issued.
    """
    if not anchors:
        raise UsageError("certificate verification needs at least one trusted CA certificate (--cert)")
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
        chain = [x509.load_der_x509_certificate(d) for d in intermediates_der]
    except ValueError as exc:
        raise IntegrityError(f"certificate check: the bundle's certificate does not parse: {exc}") from exc
    when = at or leaf.not_valid_before_utc
    ca_policy = (
        xv.ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, xv.Criticality.AGNOSTIC, _is_ca)
        .may_be_present(x509.KeyUsage, xv.Criticality.AGNOSTIC, _may_sign_certs)
    )
    builder = (
        xv.PolicyBuilder()
        .store(xv.Store(list(anchors)))
        .time(when)
        .max_chain_depth(8)
        .extension_policies(ca_policy=ca_policy, ee_policy=xv.ExtensionPolicy.permit_all())
    )
    try:
        builder.build_client_verifier().verify(leaf, [*chain, *extra_intermediates])
    except xv.VerificationError as exc:
        raise IntegrityError(
            f"certificate check: signing certificate {leaf.subject.rfc4514_string()!r} does not chain to a "
            f"trusted CA at {when.isoformat()}: {exc}"
        ) from exc
    _check_can_sign(leaf)
    return leaf


def _check_can_sign(leaf: x509.Certificate) -> None:
    name = leaf.subject.rfc4514_string()
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            raise IntegrityError(f"certificate check: {name!r} keyUsage lacks digitalSignature")
        has_usage = True
    except x509.ExtensionNotFound:
        has_usage = False
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
            raise IntegrityError(f"certificate check: {name!r} extendedKeyUsage lacks codeSigning")
        has_eku = True
    except x509.ExtensionNotFound:
        has_eku = False
    if not (has_usage or has_eku):
        raise IntegrityError(f"certificate check: {name!r} has neither keyUsage nor extendedKeyUsage")


def certificate_public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise IntegrityError(f"certificate check: signing key is {type(key).__name__}, expected an EC key")
    return key


def describe_certificate(cert: x509.Certificate) -> str:
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    return f"certificate {cert.subject.rfc4514_string()} (sha256 fingerprint {fingerprint})"
