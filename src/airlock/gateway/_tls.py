"""TLS for the gateway: the server context (TLS 1.2+, optional client certificates) and dev certificates.

``dev_certificates`` makes a private CA, a server certificate for the given host names and
addresses, and optionally one client certificate per tenant (CN = tenant name) for mTLS. It is for
development and tests: keys are written unencrypted with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airlock.errors import UsageError
from airlock.gateway._config import TlsConfig

__all__ = ["DevCertificates", "client_common_name", "dev_certificates", "server_context"]


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """The listening socket's context; any unusable file is a :class:`UsageError` naming it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"tls: cannot load certificate {tls.cert} with key {tls.key}: {exc}") from exc
    if tls.client_ca is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"tls: cannot load client CA {tls.client_ca}: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_common_name(peercert: object) -> str | None:
    """The subject CN of a verified peer certificate (``SSLSocket.getpeercert()`` form)."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and isinstance(value, str):
                return value
    return None


@dataclass(frozen=True)
class DevCertificates:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    #: tenant -> (cert, key)
    clients: dict[str, tuple[Path, Path]]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "airlock dev"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    subject: str,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer if not ca else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )  # fmt: skip
        return builder.sign(key, hashes.SHA256()), key
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def dev_certificates(
    out: Path,
    hosts: Sequence[str],
    tenants: Sequence[str] = (),
    days: int = 30,
) -> DevCertificates:
    """Write ca.pem/ca.key, server.pem/server.key and client-<tenant>.pem/.key into ``out``."""
    if not hosts:
        raise UsageError("certs dev: at least one --host is needed for the server certificate")
    if days <= 0 or days > 825:
        raise UsageError(f"certs dev: --days must be 1..825, got {days}")
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _issue(
        "airlock dev CA", _name("airlock dev CA"), ec.generate_private_key(ec.SECP256R1()), days, ca=True
    )
    paths = DevCertificates(out / "ca.pem", out / "ca.key", out / "server.pem", out / "server.key", {})
    _write_cert(paths.ca_cert, ca_cert)
    _write_key(paths.ca_key, ca_key)
    server_cert, server_key = _issue(
        hosts[0], ca_cert.subject, ca_key, days, sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    _write_cert(paths.server_cert, server_cert)
    _write_key(paths.server_key, server_key)
    for tenant in tenants:
        cert, key = _issue(tenant, ca_cert.subject, ca_key, days, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        pair = (out / f"client-{tenant}.pem", out / f"client-{tenant}.key")
        _write_cert(pair[0], cert)
        _write_key(pair[1], key)
        paths.clients[tenant] = pair
    return paths
