"""Interop with model-signing 1.1.1 (the OpenSSF reference), both directions, key and certificate
methods, plus the tampering it must catch. The reference CLI runs as a subprocess, offline."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airlock.errors import FormatError, IntegrityError, LimitError, UsageError
from airlock.integrity import HashLimits, TrustMode, sign, verify
from tests.integrity.integrity_helpers import (
    MODEL_FILES,
    build_model,
    flip_byte,
    issue,
    make_ca,
    write_issued,
    write_key_pair,
)

pytest.importorskip("model_signing")  # pinned in the dev extra; the interop claims need it


def model_signing(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    priv, pub = write_key_pair(d, "signer")
    other_priv, other_pub = write_key_pair(d, "other")
    ca = make_ca()
    leaf_cert, leaf_key = write_issued(d, "leaf", issue(ca, "model publisher"))
    ca_cert, _ = write_issued(d, "ca", ca)
    stranger_ca, _ = write_issued(d, "stranger", make_ca("Stranger CA"))
    return {
        "priv": priv, "pub": pub, "other_pub": other_pub, "other_priv": other_priv,
        "leaf_cert": leaf_cert, "leaf_key": leaf_key, "ca": ca_cert, "stranger_ca": stranger_ca,
    }  # fmt: skip


@pytest.fixture(scope="module")
def signed_by_reference(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]) -> tuple[Path, Path]:
    """A model signed once by `model_signing sign key`; tests copy it before tampering."""
    d = tmp_path_factory.mktemp("ref")
    model = build_model(d / "model")
    sig = d / "model.sig"
    _ok(model_signing("sign", "key", model, "--private_key", pki["priv"], "--signature", sig))
    return model, sig


@pytest.fixture
def ref_copy(tmp_path: Path, signed_by_reference: tuple[Path, Path]) -> tuple[Path, Path]:
    model, sig = signed_by_reference
    shutil.copytree(model, tmp_path / "model")
    shutil.copy(sig, tmp_path / "model.sig")
    return tmp_path / "model", tmp_path / "model.sig"


def test_reference_key_signature_verifies_in_airlock(
    ref_copy: tuple[Path, Path], pki: dict[str, Path]
) -> None:
    model, sig = ref_copy
    verified = verify(model, signature=sig, key=pki["pub"])
    assert verified.mode is TrustMode.KEY
    assert {e.path for e in verified.manifest.files} == set(MODEL_FILES)
    assert verified.signer is not None and verified.signer.startswith("public key sha256:")


def _rename(m: Path) -> None:
    (m / "config.json").rename(m / "config2.json")


TAMPERING: dict[str, tuple[Callable[[Path], object], str]] = {
    "flipped byte": (lambda m: flip_byte(m / "model.safetensors", 1234), r"hash mismatch: model.safetensors expected sha256:[0-9a-f]{64} got sha256:[0-9a-f]{64}"),
    "added file": (lambda m: (m / "evil.py").write_text("import os\n"), r"extra: evil\.py \(not in signature model\.sig\)"),
    "removed file": (lambda m: (m / "tokenizer" / "merges.txt").unlink(), r"missing: tokenizer/merges\.txt"),
    "renamed file": (_rename, r"extra: config2\.json[^\n]*\n  missing: config\.json"),
    "symlink outside": (lambda m: (m / "weights" / "extra.bin").symlink_to("/etc/passwd"), r"symlink: weights/extra\.bin -> /etc/passwd"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_with_a_reference_signed_model_fails_itemised(
    case: str, ref_copy: tuple[Path, Path], pki: dict[str, Path]
) -> None:
    model, sig = ref_copy
    tamper, message = TAMPERING[case]
    tamper(model)
    with pytest.raises(IntegrityError, match=r"integrity check failed for model \(\d problems?\):\n") as info:
        verify(model, signature=sig, key=pki["pub"])
    assert info.match(message)


def test_wrong_key_and_forged_payload_fail(ref_copy: tuple[Path, Path], pki: dict[str, Path]) -> None:
    model, sig = ref_copy
    with pytest.raises(
        IntegrityError, match=r"signature check: key hint expected [0-9a-f]{64} got [0-9a-f]{64}"
    ):
        verify(model, signature=sig, key=pki["other_pub"])
    bundle = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"] = statement["predicate"]["resources"][
        1:
    ]  # drop one file from the list
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(IntegrityError, match=r"signature check: the DSSE signature does not verify"):
        verify(model, signature=sig, key=pki["pub"])


def test_airlock_key_signature_verifies_in_reference(tmp_path: Path, pki: dict[str, Path]) -> None:
    model = build_model(tmp_path / "model")
    sig = tmp_path / "airlock.sig"
    sign(model, key=pki["priv"], output=sig)
    _ok(model_signing("verify", "key", model, "--signature", sig, "--public_key", pki["pub"]))
    flip_byte(model / "weights" / "layer.0.bin", 7)
    failed = model_signing("verify", "key", model, "--signature", sig, "--public_key", pki["pub"])
    assert failed.returncode != 0 and "weights/layer.0.bin" in failed.stdout + failed.stderr


def test_signature_inside_the_folder_signs_everything_else(tmp_path: Path, pki: dict[str, Path]) -> None:
    model = build_model(tmp_path / "model")
    sign(model, key=pki["priv"], output=model / "model.sig")
    _ok(model_signing("verify", "key", model, "--signature", model / "model.sig", "--public_key", pki["pub"]))
    assert verify(model, signature=model / "model.sig", key=pki["pub"]).manifest.params.excluded == (
        "model.sig",
    )


def test_reference_certificate_signature_verifies_in_airlock(tmp_path: Path, pki: dict[str, Path]) -> None:
    model = build_model(tmp_path / "model")
    sig = tmp_path / "model.sig"
    _ok(
        model_signing(
            "sign",
            "certificate",
            model,
            "--private_key",
            pki["leaf_key"],
            "--signing_certificate",
            pki["leaf_cert"],
            "--certificate_chain",
            pki["ca"],
            "--signature",
            sig,
        )
    )
    verified = verify(model, signature=sig, certs=[pki["ca"]])
    assert verified.mode is TrustMode.CERTIFICATE
    assert verified.signer is not None and "CN=model publisher" in verified.signer
    with pytest.raises(
        IntegrityError, match=r"certificate check: signing certificate 'CN=model publisher' does not chain"
    ):
        verify(model, signature=sig, certs=[pki["stranger_ca"]])
    with pytest.raises(IntegrityError, match=r"bundle carries certificates, but a bare key was given"):
        verify(model, signature=sig, key=pki["pub"])
    (model / "evil.py").write_text("x")
    with pytest.raises(IntegrityError, match=r"extra: evil\.py"):
        verify(model, signature=sig, certs=[pki["ca"]])


def test_airlock_certificate_signature_verifies_in_reference(tmp_path: Path, pki: dict[str, Path]) -> None:
    model = build_model(tmp_path / "model")
    sig = tmp_path / "airlock.sig"
    sign(model, key=pki["leaf_key"], certificate=pki["leaf_cert"], chain=[pki["ca"]], output=sig)
    _ok(model_signing("verify", "certificate", model, "--signature", sig, "--certificate_chain", pki["ca"]))
    assert verify(model, signature=sig, certs=[pki["ca"]]).mode is TrustMode.CERTIFICATE


def test_reference_shard_signature_with_float_shard_size_verifies(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    from model_signing import hashing, signing

    model = build_model(tmp_path / "model")
    sig = tmp_path / "shards.sig"
    config = signing.Config().use_elliptic_key_signer(private_key=pki["priv"])  # type: ignore[no-untyped-call]
    hashing_config = hashing.Config().use_shard_serialization(shard_size=1024)  # type: ignore[no-untyped-call]
    config.set_hashing_config(hashing_config).sign(model, sig)
    statement = json.loads(base64.b64decode(json.loads(sig.read_text())["dsseEnvelope"]["payload"]))
    assert statement["predicate"]["serialization"]["shard_size"] == 1024.0  # the quirk we tolerate
    small = HashLimits(min_shard_size=1024)
    verified = verify(model, signature=sig, key=pki["pub"], limits=small)
    assert verified.manifest.params.shard_size == 1024
    with pytest.raises(LimitError, match=r"shard size 1024 is below the minimum of 1048576 bytes"):
        verify(model, signature=sig, key=pki["pub"])  # the default floor refuses such a signature
    flip_byte(model / "weights" / "layer.0.bin", 9000)
    with pytest.raises(IntegrityError, match=r"hash mismatch: weights/layer\.0\.bin bytes 8192\.\.9216"):
        verify(model, signature=sig, key=pki["pub"], limits=small)


def test_airlock_refuses_a_statement_whose_root_digest_does_not_add_up(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from airlock.integrity._oms import PAYLOAD_TYPE, pae, render_bundle

    model = build_model(tmp_path / "model")
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model", "digest": {"sha256": "0" * 64}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [{"name": "config.json", "algorithm": "sha256", "digest": "1" * 64}],
        },
    }
    payload = json.dumps(statement).encode()
    key = serialization.load_pem_private_key(pki["priv"].read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    (tmp_path / "s.sig").write_text(render_bundle(payload, signature, key_hint=None, certificates=[]))
    with pytest.raises(FormatError, match=r"statement: root digest expected sha256:0{64} got sha256:"):
        verify(model, signature=tmp_path / "s.sig", key=pki["pub"])


_MODES = [(alg, shard) for alg in ("sha256", "blake2b", "blake3") for shard in (None, 1 << 20)]


def _reference_hashing(alg: str, shard: int | None) -> Any:
    from model_signing import hashing

    name = "blake2" if alg == "blake2b" else alg  # model-signing's name when hashing
    config = hashing.Config()  # type: ignore[no-untyped-call]
    if shard is None:
        return config.use_file_serialization(hashing_algorithm=name)  # type: ignore[arg-type]
    return config.use_shard_serialization(hashing_algorithm=name, shard_size=shard)  # type: ignore[arg-type]


@pytest.mark.parametrize(("alg", "shard"), _MODES)
def test_every_hashing_mode_interoperates_both_ways_or_is_refused(
    tmp_path: Path, pki: dict[str, Path], alg: str, shard: int | None
) -> None:
    from model_signing import signing, verifying

    model = build_model(tmp_path / "model")
    ours, theirs = tmp_path / "airlock.sig", tmp_path / "reference.sig"
    # model-signing 1.1.1 guesses its verifier's hashing from the signature only for whole files
    # with sha256 / blake3 (it reads a shard size as a float and 'blake2b' as unknown, for its own
    # signatures too), so its verifier is told the mode, as its documentation shows.
    reference = verifying.Config().use_elliptic_key_verifier(public_key=pki["pub"])  # type: ignore[no-untyped-call]
    reference.set_hashing_config(_reference_hashing(alg, shard))
    if alg == "blake3" and shard is not None:
        with pytest.raises(UsageError, match=r"blake3 signatures cannot be sharded"):
            sign(model, key=pki["priv"], output=ours, algorithm=alg, shard_size=shard)
    else:
        sign(model, key=pki["priv"], output=ours, algorithm=alg, shard_size=shard)
        statement = json.loads(base64.b64decode(json.loads(ours.read_text())["dsseEnvelope"]["payload"]))
        label = f"{alg}-sharded-{shard}" if shard else alg
        assert {r["algorithm"] for r in statement["predicate"]["resources"]} == {label}
        reference.verify(model, ours)  # raises on any mismatch
    signer = signing.Config().use_elliptic_key_signer(private_key=pki["priv"])  # type: ignore[no-untyped-call]
    signer.set_hashing_config(_reference_hashing(alg, shard)).sign(model, theirs)
    assert verify(model, signature=theirs, key=pki["pub"]).mode is TrustMode.KEY
    flip_byte(model / "weights" / "layer.0.bin", 10)
    with pytest.raises(IntegrityError, match=r"hash mismatch: weights/layer\.0\.bin"):
        verify(model, signature=theirs, key=pki["pub"])
    if ours.exists():
        with pytest.raises(IntegrityError, match=r"hash mismatch: weights/layer\.0\.bin"):
            verify(model, signature=ours, key=pki["pub"])
        with pytest.raises(ValueError, match=r"mismatch"):
            reference.verify(model, ours)
