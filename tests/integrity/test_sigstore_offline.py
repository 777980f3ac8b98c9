"""Sigstore keyless bundles verified offline against a trusted root made in the test (own CA, own log
key): nothing reaches the network, and each broken link of the chain fails by name."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from airlock.errors import IntegrityError, UsageError
from airlock.integrity import TrustMode, hash, verify
from airlock.integrity._oms import PAYLOAD_TYPE, pae, statement_bytes
from tests.integrity.integrity_helpers import NOW, flip_byte, issue, make_ca

IDENTITY = "publisher@example.org"
ISSUER = "https://issuer.example.org"
_ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def _der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _setup(tmp_path: Path, model: Path, *, identity: str = IDENTITY) -> dict[str, Any]:
    ca = make_ca("Test Fulcio")
    issuer_value = bytes([0x0C, len(ISSUER)]) + ISSUER.encode()
    leaf = issue(
        ca,
        "sigstore",
        extensions=[
            (x509.SubjectAlternativeName([x509.RFC822Name(identity)]), True),
            (x509.UnrecognizedExtension(_ISSUER_OID, issuer_value), False),
        ],
        not_before=NOW - datetime.timedelta(minutes=5),
        days=1,
    )
    log_key = ec.generate_private_key(ec.SECP256R1())
    log_id = hashlib.sha256(_spki(log_key.public_key())).digest()
    payload = statement_bytes(hash(model))
    signature = leaf.key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    leaf_pem = leaf.cert.public_bytes(serialization.Encoding.PEM)
    body = {
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": "0" * 64},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [
                {
                    "signature": base64.b64encode(signature).decode(),
                    "verifier": base64.b64encode(leaf_pem).decode(),
                }
            ],
        },
    }
    body_b64 = base64.b64encode(json.dumps(body).encode()).decode()
    integrated = int(NOW.timestamp())
    canonical = json.dumps(
        {"body": body_b64, "integratedTime": integrated, "logID": log_id.hex(), "logIndex": 7},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    entry = {
        "logIndex": "7",
        "logId": {"keyId": base64.b64encode(log_id).decode()},
        "kindVersion": {"kind": "dsse", "version": "0.0.1"},
        "integratedTime": str(integrated),
        "inclusionPromise": {
            "signedEntryTimestamp": base64.b64encode(
                log_key.sign(canonical, ec.ECDSA(hashes.SHA256()))
            ).decode()
        },
        "canonicalizedBody": body_b64,
    }
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"certificate": {"rawBytes": _der(leaf.cert)}, "tlogEntries": [entry]},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode()}],
        },
    }
    root = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [
            {
                "baseUrl": "https://log.invalid",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": base64.b64encode(_spki(log_key.public_key())).decode(),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2020-01-01T00:00:00Z"},
                },
                "logId": {"keyId": base64.b64encode(log_id).decode()},
            }
        ],
        "certificateAuthorities": [
            {
                "certChain": {"certificates": [{"rawBytes": _der(ca.cert)}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            }
        ],
    }
    (tmp_path / "model.sigstore.json").write_text(json.dumps(bundle))
    (tmp_path / "trusted_root.json").write_text(json.dumps(root))
    return {
        "bundle": bundle,
        "root": root,
        "sig": tmp_path / "model.sigstore.json",
        "trust": tmp_path / "trusted_root.json",
    }


def _verify(model: Path, s: dict[str, Any], identity: str = IDENTITY, issuer: str = ISSUER) -> object:
    return verify(model, signature=s["sig"], trust_root=s["trust"], identity=identity, issuer=issuer)


def test_keyless_bundle_verifies_offline(model: Path, tmp_path: Path) -> None:
    s = _setup(tmp_path, model)
    verified = verify(model, signature=s["sig"], trust_root=s["trust"], identity=IDENTITY, issuer=ISSUER)
    assert verified.mode is TrustMode.SIGSTORE
    assert verified.signer is not None and verified.signer.startswith(f"sigstore identity {IDENTITY}")
    flip_byte(model / "config.json")
    with pytest.raises(IntegrityError, match=r"hash mismatch: config\.json"):
        _verify(model, s)


def test_identity_and_issuer_must_match(model: Path, tmp_path: Path) -> None:
    s = _setup(tmp_path, model)
    with pytest.raises(
        IntegrityError, match=r"identity expected 'someone@else' got \['publisher@example.org'\]"
    ):
        _verify(model, s, identity="someone@else")
    with pytest.raises(
        IntegrityError, match=r"OIDC issuer expected 'https://other' got 'https://issuer.example.org'"
    ):
        _verify(model, s, issuer="https://other")
    with pytest.raises(UsageError, match=r"needs both the signer identity and its OIDC issuer"):
        verify(model, signature=s["sig"], trust_root=s["trust"], identity=IDENTITY)


def test_forged_log_entry_and_unknown_ca_fail(model: Path, tmp_path: Path) -> None:
    s = _setup(tmp_path, model)
    entry = s["bundle"]["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)  # the SET no longer covers it
    s["sig"].write_text(json.dumps(s["bundle"]))
    with pytest.raises(IntegrityError, match=r"signed entry timestamp does not verify"):
        _verify(model, s)
    s = _setup(tmp_path, model)
    s["root"]["certificateAuthorities"][0]["certChain"]["certificates"][0]["rawBytes"] = _der(
        make_ca("Other").cert
    )
    s["trust"].write_text(json.dumps(s["root"]))
    with pytest.raises(IntegrityError, match=r"no trusted CA issued the signing certificate"):
        _verify(model, s)
    s["root"]["tlogs"][0]["logId"]["keyId"] = base64.b64encode(b"\x01" * 32).decode()
    s["trust"].write_text(json.dumps(s["root"]))
    with pytest.raises(IntegrityError, match=r"log [0-9a-f]{64} is not in the trusted root"):
        _verify(model, s)
