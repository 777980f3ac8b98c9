"""Helpers for the integrity tests, all generated in code (no network, no shipped files): a model
folder, EC keys, a CA and leaf certificates."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)

#: deterministic pseudo-random bytes (the same in every process that imports this module)
_NOISE = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(100))

MODEL_FILES: dict[str, bytes] = {
    "config.json": b'{"model_type": "toy", "hidden_size": 8}\n',
    "model.safetensors": _NOISE[:3000] + b"\x00" * 100,
    "tokenizer/vocab.txt": b"a\nb\nc\n",
    "tokenizer/merges.txt": b"#version: 0.2\n",
    "weights/layer.0.bin": bytes(range(256)) * 40,
}


def build_model(root: Path, files: dict[str, bytes] | None = None) -> Path:
    for rel, data in (files or MODEL_FILES).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def flip_byte(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def write_key_pair(directory: Path, name: str, curve: ec.EllipticCurve | None = None) -> tuple[Path, Path]:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    priv = directory / f"{name}.key.pem"
    pub = directory / f"{name}.pub.pem"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv, pub


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def make_ca(cn: str = "Test Root CA", *, not_before: datetime.datetime | None = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or NOW - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued,
    cn: str,
    *,
    is_ca: bool = False,
    code_signing: bool = True,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
    not_before: datetime.datetime | None = None,
    days: int = 365,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or NOW - datetime.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        usages = [ExtendedKeyUsageOID.CODE_SIGNING if code_signing else ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    for ext, critical in extensions or []:
        builder = builder.add_extension(ext, critical=critical)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def write_issued(directory: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    """Write ``name.cert.pem`` and ``name.key.pem``; return (cert, key)."""
    cert = directory / f"{name}.cert.pem"
    key = directory / f"{name}.key.pem"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key
