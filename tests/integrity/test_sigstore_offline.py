"""Sigstore keyless bundles verified offline by sigstore-python against a trusted root made in the test
(own Fulcio-like CA, own Rekor log key, own CT log key): nothing reaches the network. The bundle is
complete (inclusion proof with a signed checkpoint, signed entry timestamp, embedded SCT), and each
broken or missing link fails by name -- the SET-only bundles the old hand-written verifier accepted
among them."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from airlock._cli import main
from airlock.errors import IntegrityError, UsageError
from airlock.integrity import TrustMode, hash, verify
from airlock.integrity._oms import PAYLOAD_TYPE, pae, statement_bytes
from tests.integrity.integrity_helpers import NOW, Issued, flip_byte, make_ca

pytest.importorskip("sigstore")

IDENTITY = "publisher@example.org"
ISSUER = "https://issuer.example.org"
_ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw string, as Fulcio also writes
_SCT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ORIGIN = "rekor.test"


def _der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _leaf(ca: Issued, ct_key: ec.EllipticCurvePrivateKey, identity: str, *, sct: bool) -> Issued:
    """A Fulcio-like certificate: SAN identity, OIDC issuer extension, and an embedded precert SCT."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = NOW - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(minutes=20))
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(identity)]), critical=True)
        .add_extension(x509.UnrecognizedExtension(_ISSUER_OID, bytes([0x0C, len(ISSUER)]) + ISSUER.encode()), critical=False)
        .add_extension(x509.UnrecognizedExtension(_ISSUER_V1_OID, ISSUER.encode()), critical=False)
    )  # fmt: skip
    if not sct:
        return Issued(builder.sign(ca.key, hashes.SHA256()), key)
    precert_tbs = builder.sign(ca.key, hashes.SHA256()).tbs_certificate_bytes
    ct_id = hashlib.sha256(_spki(ct_key.public_key())).digest()
    issuer_key_hash = hashlib.sha256(_spki(ca.key.public_key())).digest()
    millis = int((NOW - datetime.timedelta(minutes=4)).timestamp() * 1000)
    entry = issuer_key_hash + len(precert_tbs).to_bytes(3, "big") + precert_tbs
    signed = struct.pack("!BBQH", 0, 0, millis, 1) + entry + struct.pack("!H", 0)
    signature = ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
    one = (
        bytes([0])
        + ct_id
        + struct.pack("!QH", millis, 0)
        + bytes([4, 3])
        + struct.pack("!H", len(signature))
        + signature
    )
    sct_list = struct.pack("!H", len(one) + 2) + struct.pack("!H", len(one)) + one
    octets = bytes([0x04]) + _der_len(len(sct_list)) + sct_list
    final = builder.add_extension(x509.UnrecognizedExtension(_SCT_OID, octets), critical=False)
    return Issued(final.sign(ca.key, hashes.SHA256()), key)


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _setup(
    tmp_path: Path, model: Path, *, identity: str = IDENTITY, proof: bool = True, sct: bool = True
) -> dict[str, Any]:
    ca = make_ca("Test Fulcio")
    log_key = ec.generate_private_key(ec.SECP256R1())
    ct_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _leaf(ca, ct_key, identity, sct=sct)
    log_id = hashlib.sha256(_spki(log_key.public_key())).digest()
    ct_id = hashlib.sha256(_spki(ct_key.public_key())).digest()
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
    body_raw = json.dumps(body).encode()
    body_b64 = base64.b64encode(body_raw).decode()
    integrated = int((NOW - datetime.timedelta(minutes=3)).timestamp())
    canonical = json.dumps(
        {"body": body_b64, "integratedTime": integrated, "logID": log_id.hex(), "logIndex": 0},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    root_hash = hashlib.sha256(b"\x00" + body_raw).digest()  # a one-leaf tree
    note = f"{ORIGIN}\n1\n{base64.b64encode(root_hash).decode()}\n"
    note_sig = log_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
    checkpoint = note + "\n" + f"\u2014 {ORIGIN} {base64.b64encode(log_id[:4] + note_sig).decode()}\n"
    entry: dict[str, Any] = {
        "logIndex": "0",
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
    if proof:
        entry["inclusionProof"] = {
            "logIndex": "0",
            "rootHash": base64.b64encode(root_hash).decode(),
            "treeSize": "1",
            "hashes": [],
            "checkpoint": {"envelope": checkpoint},
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
    valid = {"start": "2020-01-01T00:00:00Z"}

    def key_entry(key: ec.EllipticCurvePrivateKey, key_id: bytes, url: str) -> dict[str, Any]:
        return {
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": base64.b64encode(_spki(key.public_key())).decode(),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": valid,
            },
            "logId": {"keyId": base64.b64encode(key_id).decode()},
        }

    root = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [key_entry(log_key, log_id, "https://rekor.invalid")],
        "certificateAuthorities": [
            {
                "subject": {"organization": "test", "commonName": "Test Fulcio"},
                "uri": "https://fulcio.invalid",
                "certChain": {"certificates": [{"rawBytes": _der(ca.cert)}]},
                "validFor": valid,
            }
        ],
        "ctlogs": [key_entry(ct_key, ct_id, "https://ctfe.invalid")],
        "timestampAuthorities": [],
    }
    (tmp_path / "model.sigstore.json").write_text(json.dumps(bundle))
    (tmp_path / "trusted_root.json").write_text(json.dumps(root))
    return {"bundle": bundle, "root": root, "sig": tmp_path / "model.sigstore.json", "trust": tmp_path / "trusted_root.json",
            "ca": ca}  # fmt: skip


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
    with pytest.raises(IntegrityError, match=r"sigstore check: .*someone@else"):
        _verify(model, s, identity="someone@else")
    with pytest.raises(IntegrityError, match=r"sigstore check: .*https://other"):
        _verify(model, s, issuer="https://other")
    with pytest.raises(UsageError, match=r"needs both the signer identity and its OIDC issuer"):
        verify(model, signature=s["sig"], trust_root=s["trust"], identity=IDENTITY)


def test_bundle_without_inclusion_proof_is_refused(model: Path, tmp_path: Path) -> None:
    # the old hand-written verifier accepted a signed entry timestamp alone
    s = _setup(tmp_path, model, proof=False)
    with pytest.raises(
        IntegrityError, match=r"sigstore check: the bundle is not a verifiable Sigstore bundle"
    ):
        _verify(model, s)


def test_certificate_without_sct_is_refused(model: Path, tmp_path: Path) -> None:
    s = _setup(tmp_path, model, sct=False)
    with pytest.raises(
        IntegrityError, match=r"sigstore check: .*(SCT|PrecertificateSignedCertificateTimestamps)"
    ):
        _verify(model, s)


def test_forged_checkpoint_set_and_unknown_ca_fail(model: Path, tmp_path: Path) -> None:
    s = _setup(tmp_path, model)
    proof = s["bundle"]["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    proof["checkpoint"]["envelope"] = proof["checkpoint"]["envelope"].replace("\n1\n", "\n2\n", 1)
    s["sig"].write_text(json.dumps(s["bundle"]))
    with pytest.raises(IntegrityError, match=r"sigstore check: .*checkpoint"):
        _verify(model, s)
    s = _setup(tmp_path, model)
    entry = s["bundle"]["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)  # the SET no longer covers it
    s["sig"].write_text(json.dumps(s["bundle"]))
    with pytest.raises(IntegrityError, match=r"sigstore check: "):
        _verify(model, s)
    s = _setup(tmp_path, model)
    s["root"]["certificateAuthorities"][0]["certChain"]["certificates"][0]["rawBytes"] = _der(
        make_ca("Other").cert
    )
    s["trust"].write_text(json.dumps(s["root"]))
    with pytest.raises(IntegrityError, match=r"sigstore check: "):
        _verify(model, s)


def test_ca_certificate_alone_does_not_verify_a_keyless_bundle(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _setup(tmp_path, model)
    ca_pem = tmp_path / "fulcio.pem"
    ca_pem.write_bytes(s["ca"].cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(
        UsageError, match=r"Sigstore keyless bundle: verify it with --trust-root, --identity and --issuer"
    ):
        verify(model, signature=s["sig"], certs=[ca_pem])
    assert main(["verify", str(model), "--signature", str(s["sig"]), "--cert", str(ca_pem)]) == 2
    assert "keyless bundle" in capsys.readouterr().err
