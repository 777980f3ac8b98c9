"""verify() and Verified.open() rule by rule, with exact messages: one trust source, the options that
only apply to signatures, the unsafe options (recorded and logged), the signature file left out of
what it signs, a single file found under its own name, key and certificate signatures made by
airlock's own signer (keys generated in code), and the sealed copy open() hands out.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from airlock.errors import IntegrityError, LimitError, UsageError
from airlock.integrity import TrustMode, _verify, sign, verify
from airlock.integrity._compare import ItemisedIntegrityError
from airlock.integrity._manifest import FileEntry, Manifest, ShardDigest
from airlock.integrity._params import Algorithm, HashLimits, HashParams, Method
from airlock.integrity._verify import Verified
from airlock.integrity._walk import walk
from tests.integrity.integrity_helpers import issue, make_ca, write_issued, write_key_pair

SMALL = HashLimits(workers=1, min_shard_size=1)


def _h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"weights")
    (root / "sub" / "b.txt").write_bytes(b"text")
    return root


def _lock(tmp_path: Path, lines: dict[str, bytes]) -> Path:
    lock = tmp_path / "m.lock"
    lock.write_text("".join(f"{_h(data)}  {name}\n" for name, data in lines.items()), encoding="utf-8")
    return lock


def _problems(error: IntegrityError) -> tuple[str, ...]:
    assert isinstance(error, ItemisedIntegrityError)
    return error.problems


def _usage(**kwargs: object) -> str:
    with pytest.raises(UsageError) as info:
        verify(**kwargs)  # type: ignore[arg-type]
    return str(info.value)


# -- choosing the trust source ---------------------------------------------------------------------


def test_exactly_one_trust_source(tmp_path: Path) -> None:
    model = _model(tmp_path)
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"})
    prefix = "verify needs exactly one of an expected digest, a lock file or a signature, got "
    assert _usage(path=model) == prefix + "none"
    assert _usage(path=model, lock=lock, expect="sha256:" + "0" * 64) == prefix + "['expect', 'lock']"
    assert _usage(path=model, lock=lock, signature=lock) == prefix + "['lock', 'signature']"
    assert _usage(path=model, expect="sha256:" + "0" * 64, signature=lock, lock=lock) == (
        prefix + "['expect', 'lock', 'signature']"
    )


@pytest.mark.parametrize("option", ["key", "certs", "chain", "trust_root", "identity", "issuer"])
def test_signature_options_need_a_signature(tmp_path: Path, option: str) -> None:
    model = _model(tmp_path)
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"})
    value: object = (
        [lock] if option in ("certs", "chain") else ("x" if option in ("identity", "issuer") else lock)
    )
    assert _usage(path=model, lock=lock, **{option: value}) == (
        "keys, certificates, trust roots and identities only apply to --signature"
    )


def test_lock_file_source(tmp_path: Path) -> None:
    model = _model(tmp_path)
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"})
    verified = verify(model, lock=lock)
    assert verified.path == str(model)
    assert verified.mode is TrustMode.LOCK
    assert verified.source == "lock file m.lock"
    assert verified.signer is None
    assert verified.unsafe == ()
    assert verified.manifest.name == "model"
    assert verified.manifest.params == HashParams()
    assert [(f.path, f.size, f.digest) for f in verified.manifest.files] == [
        ("a.bin", 7, _h(b"weights")),
        ("sub/b.txt", 4, _h(b"text")),
    ]


def test_expected_digest_of_one_file(tmp_path: Path) -> None:
    model = _model(tmp_path)
    verified = verify(model / "a.bin", expect="sha256:" + _h(b"weights").upper())
    assert verified.mode is TrustMode.DIGEST
    assert verified.source == f"digest sha256:{_h(b'weights')}"
    assert verified.signer is None
    assert verified.manifest.files == (FileEntry(".", 7, _h(b"weights")),)
    blake = hashlib.blake2b(b"weights").hexdigest()
    assert verify(model / "a.bin", expect="blake2b:" + blake).manifest.params.algorithm is Algorithm.BLAKE2B


def test_expected_digest_mismatch(tmp_path: Path) -> None:
    model = _model(tmp_path)
    with pytest.raises(IntegrityError) as info:
        verify(model / "a.bin", expect="sha256:" + _h(b"other"))
    assert str(info.value) == (
        f"integrity check failed for a.bin (1 problem):\n  hash mismatch: a.bin expected "
        f"sha256:{_h(b'other')} got sha256:{_h(b'weights')}"
    )


def test_expected_digest_of_a_folder_is_refused(tmp_path: Path) -> None:
    model = _model(tmp_path)
    assert _usage(path=model, expect="sha256:" + "0" * 64) == (
        f"an expected digest checks one file, but {model} is a folder (use a lock file)"
    )


# -- a single file against a lock file -------------------------------------------------------------


def test_single_file_found_under_its_own_name(tmp_path: Path) -> None:
    model = _model(tmp_path)
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"})
    verified = verify(model / "a.bin", lock=lock)
    assert verified.manifest.files == (FileEntry(".", 7, _h(b"weights")),)
    assert verified.source == "lock file m.lock"
    assert verified.mode is TrustMode.LOCK


def test_single_file_found_under_dot(tmp_path: Path) -> None:
    model = _model(tmp_path)
    lock = tmp_path / "dot.lock"
    lock.write_text(f"{_h(b'weights')}  .\n{_h(b'other')}  a.bin\n", encoding="utf-8")
    # "." is looked up first: the a.bin line (another digest) is never used
    assert verify(model / "a.bin", lock=lock).manifest.files == (FileEntry(".", 7, _h(b"weights")),)
    with pytest.raises(IntegrityError) as info:
        verify(model / "sub" / "b.txt", lock=lock)
    assert "hash mismatch: b.txt" in str(info.value)


def test_single_file_named_differently_is_missing(tmp_path: Path) -> None:
    model = _model(tmp_path)
    lock = _lock(tmp_path, {"a.bin": b"weights", "c.bin": b"x"})
    with pytest.raises(IntegrityError) as info:
        verify(model / "sub" / "b.txt", lock=lock)
    assert str(info.value) == (
        "integrity check failed for b.txt (1 problem):\n  missing: b.txt is not in lock file m.lock"
    )


def test_single_file_view_keeps_the_size_and_shards(tmp_path: Path) -> None:
    model = _model(tmp_path)
    lock = tmp_path / "s.json"
    manifest = Manifest(
        "x",
        HashParams(method=Method.SHARDS, shard_size=4),
        (FileEntry("a.bin", 7, None, (ShardDigest(0, 4, _h(b"weig")), ShardDigest(4, 7, _h(b"hts")))),),
    )
    lock.write_text(manifest.to_json(), encoding="utf-8")
    verified = verify(model / "a.bin", lock=lock, limits=SMALL)
    assert verified.manifest.files[0].shards == manifest.files[0].shards
    wrong_size = Manifest(
        "x",
        HashParams(method=Method.SHARDS, shard_size=4),
        (FileEntry("a.bin", 8, None, (ShardDigest(0, 4, _h(b"weig")), ShardDigest(4, 8, _h(b"hts!")))),),
    )
    lock.write_text(wrong_size.to_json(), encoding="utf-8")
    with pytest.raises(IntegrityError) as info:
        verify(model / "a.bin", lock=lock, limits=SMALL)
    assert _problems(info.value) == ("size mismatch: a.bin expected 8 bytes got 7",)


# -- problems and unsafe options -------------------------------------------------------------------


def test_every_problem_is_listed(tmp_path: Path) -> None:
    model = _model(tmp_path)
    (model / "extra.py").write_text("x\n", encoding="utf-8")
    lock = _lock(tmp_path, {"a.bin": b"other", "gone": b"x", "sub/b.txt": b"text"})
    with pytest.raises(IntegrityError) as info:
        verify(model, lock=lock)
    assert _problems(info.value) == (
        f"hash mismatch: a.bin expected sha256:{_h(b'other')} got sha256:{_h(b'weights')}",
        "extra: extra.py (not in lock file m.lock)",
        "missing: gone",
    )


def test_tree_problems_come_first(tmp_path: Path) -> None:
    model = _model(tmp_path)
    (model / "link").symlink_to("a.bin")
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text", "gone": b""})
    with pytest.raises(IntegrityError) as info:
        verify(model, lock=lock)
    assert _problems(info.value)[-1] == "missing: gone"
    assert _problems(info.value)[0].startswith("symlink: link")
    assert len(_problems(info.value)) == 2


def test_unsafe_options_are_recorded_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _model(tmp_path)
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("x\n", encoding="utf-8")
    (model / "logs").mkdir()
    (model / "logs" / "l").write_text("x\n", encoding="utf-8")
    (model / "extra").write_text("x\n", encoding="utf-8")
    (model / "link").symlink_to("a.bin")
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text", "link": b"weights"})
    with caplog.at_level(logging.WARNING, logger="airlock.integrity"):
        verified = verify(
            model,
            lock=lock,
            unsafe_ignore=[".git", "logs"],
            unsafe_allow_extra=True,
            unsafe_allow_symlinks=True,
        )
    assert verified.unsafe == ("unsafe-ignore: .git, logs", "unsafe-allow-extra", "unsafe-allow-symlinks")
    assert [r.getMessage() for r in caplog.records if r.name == "airlock.integrity"] == [
        "integrity check weakened by unsafe-ignore: .git, logs",
        "integrity check weakened by unsafe-allow-extra",
        "integrity check weakened by unsafe-allow-symlinks",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "airlock.integrity")
    params = verified.manifest.params
    assert params.excluded == (".git", "logs")
    assert params.allow_symlinks is True
    assert [f.path for f in verified.manifest.files] == ["a.bin", "extra", "link", "sub/b.txt"]


@pytest.mark.parametrize("which", ["ignore", "extra", "symlinks"])
def test_each_unsafe_option_alone(tmp_path: Path, which: str) -> None:
    model = _model(tmp_path)
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"})
    options: dict[str, dict[str, object]] = {
        "ignore": {"unsafe_ignore": ["nothing"]},
        "extra": {"unsafe_allow_extra": True},
        "symlinks": {"unsafe_allow_symlinks": True},
    }
    kwargs = options[which]
    verified = verify(model, lock=lock, **kwargs)  # type: ignore[arg-type]
    assert verified.unsafe == (
        {
            "ignore": "unsafe-ignore: nothing",
            "extra": "unsafe-allow-extra",
            "symlinks": "unsafe-allow-symlinks",
        }[which],
    )
    assert verified.manifest.params.allow_symlinks is (which == "symlinks")


def test_extra_file_fails_without_unsafe_allow_extra(tmp_path: Path) -> None:
    model = _model(tmp_path)
    (model / "extra").write_text("x\n", encoding="utf-8")
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"})
    with pytest.raises(IntegrityError):
        verify(model, lock=lock)
    assert verify(model, lock=lock, unsafe_allow_extra=True).unsafe == ("unsafe-allow-extra",)


def test_default_limits_apply(tmp_path: Path) -> None:
    model = _model(tmp_path)
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"})
    with pytest.raises(LimitError):
        verify(model, lock=lock, limits=HashLimits(max_files=1))
    assert verify(model, lock=lock, limits=None).mode is TrustMode.LOCK


# -- signatures ------------------------------------------------------------------------------------


def _hint(pub: Path) -> str:
    return hashlib.sha256(pub.read_bytes()).hexdigest()


def test_key_signature_outside_the_model(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = write_key_pair(tmp_path, "k")
    sig = tmp_path / "model.sig"
    sign(model, key=priv, output=sig)
    verified = verify(model, signature=sig, key=pub)
    assert verified.mode is TrustMode.KEY
    assert verified.signer == f"public key sha256:{_hint(pub)}"
    assert verified.source == "signature model.sig"
    assert verified.manifest.params.excluded == ()


def test_signature_inside_the_model_is_left_out(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = write_key_pair(tmp_path, "k")
    sig = model / "sub" / "model.sig"
    sign(model, key=priv, output=sig)
    verified = verify(model, signature=sig, key=pub)
    assert verified.manifest.params.excluded == ("sub/model.sig",)
    assert [f.path for f in verified.manifest.files] == ["a.bin", "sub/b.txt"]


def test_signature_beside_the_model_with_a_dotted_name(tmp_path: Path) -> None:
    # "..x.sig" next to the folder is outside it, but a name starting with ".." inside is inside
    model = _model(tmp_path)
    priv, pub = write_key_pair(tmp_path, "k")
    inside = model / "..x.sig"
    sign(model, key=priv, output=inside)
    assert verify(model, signature=inside, key=pub).manifest.params.excluded == ("..x.sig",)


def test_signature_of_the_parent_is_not_excluded(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = write_key_pair(tmp_path, "k")
    sig = tmp_path / "model.sig"
    sign(model / "a.bin", key=priv, output=sig)
    verified = verify(model / "a.bin", signature=sig, key=pub)
    assert verified.manifest.params.excluded == ()


def test_signature_cannot_be_the_model(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = write_key_pair(tmp_path, "k")
    sig = tmp_path / "model.sig"
    sign(model / "a.bin", key=priv, output=sig)
    assert _usage(path=sig, signature=sig, key=pub) == "the signature file cannot be the model it signs"


def test_a_signature_needs_exactly_one_way_to_check_it(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = write_key_pair(tmp_path, "k")
    sig = tmp_path / "model.sig"
    sign(model, key=priv, output=sig)
    prefix = "a signature needs exactly one of a public key, a CA certificate or a trust root, got "
    assert _usage(path=model, signature=sig) == prefix + "none"
    assert _usage(path=model, signature=sig, key=pub, certs=[pub]) == prefix + "['key', 'cert']"
    assert _usage(path=model, signature=sig, certs=[pub], trust_root=pub) == prefix + "['cert', 'trust_root']"
    assert _usage(path=model, signature=sig, key=pub, trust_root=pub) == prefix + "['key', 'trust_root']"


def test_key_signature_by_another_key(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, _ = write_key_pair(tmp_path, "k")
    _, other = write_key_pair(tmp_path, "other")
    sig = tmp_path / "model.sig"
    sign(model, key=priv, output=sig)
    with pytest.raises(IntegrityError) as info:
        verify(model, signature=sig, key=other)
    hint = json.loads(sig.read_text())["verificationMaterial"]["publicKey"]["hint"]
    assert str(info.value) == (
        f"signature check: key hint expected {_hint(other)} got {hint} (signed by another key)"
    )


def test_key_signature_without_a_hint_is_checked_by_the_signature(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = write_key_pair(tmp_path, "k")
    _, other = write_key_pair(tmp_path, "other")
    sig = tmp_path / "model.sig"
    sign(model, key=priv, output=sig)
    bundle = json.loads(sig.read_text())
    bundle["verificationMaterial"]["publicKey"] = {}
    sig.write_text(json.dumps(bundle))
    assert verify(model, signature=sig, key=pub).signer == f"public key sha256:{_hint(pub)}"
    with pytest.raises(IntegrityError) as info:
        verify(model, signature=sig, key=other)
    assert str(info.value) == f"signature check: the DSSE signature does not verify with public key {other}"


def _ca_signed(tmp_path: Path, model: Path) -> tuple[Path, Path, x509.Certificate]:
    ca = make_ca()
    leaf = issue(ca, "signer")
    cert, key = write_issued(tmp_path, "leaf", leaf)
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    sig = tmp_path / "model.sig"
    sign(model, key=key, certificate=cert, output=sig)
    return sig, ca_pem, leaf.cert


def test_certificate_signature(tmp_path: Path) -> None:
    model = _model(tmp_path)
    sig, ca_pem, leaf = _ca_signed(tmp_path, model)
    verified = verify(model, signature=sig, certs=[ca_pem])
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
    assert verified.mode is TrustMode.CERTIFICATE
    assert verified.signer == f"certificate CN=signer (sha256 fingerprint {fingerprint})"


def test_certificate_bundle_with_a_bare_key(tmp_path: Path) -> None:
    model = _model(tmp_path)
    sig, _, leaf = _ca_signed(tmp_path, model)
    pub = tmp_path / "leaf.pub.pem"
    pub.write_bytes(
        leaf.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(IntegrityError) as info:
        verify(model, signature=sig, key=pub)
    assert str(info.value) == "signature check: the bundle carries certificates, but a bare key was given"


def test_key_bundle_with_a_ca(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, _ = write_key_pair(tmp_path, "k")
    sig = tmp_path / "model.sig"
    sign(model, key=priv, output=sig)
    ca = make_ca()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(IntegrityError) as info:
        verify(model, signature=sig, certs=[ca_file])
    assert str(info.value) == "signature check: the bundle has no certificate (it was signed with a bare key)"


@pytest.mark.parametrize("option", ["identity", "issuer"])
def test_identity_applies_to_keyless_only(tmp_path: Path, option: str) -> None:
    model = _model(tmp_path)
    sig, ca_pem, _ = _ca_signed(tmp_path, model)
    assert _usage(path=model, signature=sig, certs=[ca_pem], **{option: "x"}) == (
        "--identity and --issuer apply to Sigstore keyless bundles (--trust-root)"
    )


def test_keyless_bundle_with_a_ca_is_refused(tmp_path: Path) -> None:
    model = _model(tmp_path)
    sig, ca_pem, _ = _ca_signed(tmp_path, model)
    bundle = json.loads(sig.read_text())
    bundle["verificationMaterial"]["tlogEntries"] = [{"logIndex": "1"}]
    sig.write_text(json.dumps(bundle))
    assert _usage(path=model, signature=sig, certs=[ca_pem]) == (
        "this is a Sigstore keyless bundle: verify it with --trust-root, --identity and --issuer (a CA "
        "certificate alone would accept any identity it issued to)"
    )


@pytest.mark.parametrize("oid", ["1.3.6.1.4.1.57264.1.1", "1.3.6.1.4.1.57264.1.8"])
def test_fulcio_certificates_are_keyless(oid: str) -> None:
    ca = make_ca()
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), b"\x0c\x03iss")
    leaf = issue(ca, "signer", extensions=[(ext, False)])
    assert _verify._is_keyless(leaf.cert.public_bytes(serialization.Encoding.DER))
    near = x509.UnrecognizedExtension(x509.ObjectIdentifier(oid + "0"), b"\x0c\x03iss")
    other = issue(ca, "signer", extensions=[(near, False)])
    assert not _verify._is_keyless(other.cert.public_bytes(serialization.Encoding.DER))


def test_undecodable_certificate_is_not_keyless() -> None:
    assert _verify._is_keyless(b"\x30\x03\x02\x01\x01") is False


@pytest.mark.parametrize(("identity", "issuer"), [(None, "https://i"), ("me", None), ("", "https://i")])
def test_trust_root_needs_identity_and_issuer(
    tmp_path: Path, identity: str | None, issuer: str | None
) -> None:
    model = _model(tmp_path)
    sig, _, _ = _ca_signed(tmp_path, model)
    assert _usage(path=model, signature=sig, trust_root=sig, identity=identity, issuer=issuer) == (
        "Sigstore verification needs both the signer identity and its OIDC issuer"
    )


def test_tampered_model_under_a_signature(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = write_key_pair(tmp_path, "k")
    sig = tmp_path / "model.sig"
    sign(model, key=priv, output=sig)
    (model / "a.bin").write_bytes(b"weightz")
    with pytest.raises(IntegrityError) as info:
        verify(model, signature=sig, key=pub)
    assert _problems(info.value) == (
        f"hash mismatch: a.bin expected sha256:{_h(b'weights')} got sha256:{_h(b'weightz')}",
    )


def test_forged_payload_fails_the_signature(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = write_key_pair(tmp_path, "k")
    sig = tmp_path / "model.sig"
    sign(model, key=priv, output=sig)
    bundle = json.loads(sig.read_text())
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload.replace(b"a.bin", b"a.bim")).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(IntegrityError) as info:
        verify(model, signature=sig, key=pub)
    assert str(info.value) == f"signature check: the DSSE signature does not verify with public key {pub}"


# -- Verified.open: the sealed copy ----------------------------------------------------------------


def test_open_hands_out_a_sealed_copy(tmp_path: Path) -> None:
    model = _model(tmp_path)
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"})
    verified = verify(model, lock=lock)
    with verified.open("sub/b.txt") as fh:
        assert fh.read() == b"text"
        seals = fcntl.fcntl(fh.fileno(), fcntl.F_GET_SEALS)
        for name in ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE"):
            assert seals & getattr(fcntl, name), name
        assert os.get_inheritable(fh.fileno()) is False
        assert os.readlink(f"/proc/self/fd/{fh.fileno()}").startswith("/memfd:airlock-verified")


def test_open_of_a_single_file(tmp_path: Path) -> None:
    model = _model(tmp_path)
    verified = verify(model / "a.bin", expect="sha256:" + _h(b"weights"))
    with verified.open(".") as fh:
        assert fh.read() == b"weights"


def test_open_of_a_sharded_file(tmp_path: Path) -> None:
    model = _model(tmp_path)
    lock = tmp_path / "s.json"
    manifest = Manifest(
        "x",
        HashParams(method=Method.SHARDS, shard_size=4),
        (
            FileEntry("a.bin", 7, None, (ShardDigest(0, 4, _h(b"weig")), ShardDigest(4, 7, _h(b"hts")))),
            FileEntry("sub/b.txt", 4, None, (ShardDigest(0, 4, _h(b"text")),)),
        ),
    )
    lock.write_text(manifest.to_json(), encoding="utf-8")
    verified = verify(model, lock=lock, limits=SMALL)
    with verified.open("a.bin") as fh:
        assert fh.read() == b"weights"


def test_open_of_an_unknown_file(tmp_path: Path) -> None:
    model = _model(tmp_path)
    verified = verify(model, lock=_lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"}))
    with pytest.raises(UsageError) as info:
        verified.open("b.txt")
    assert str(info.value) == f"b.txt is not a file of the verified manifest for {model}"


def test_open_of_a_file_without_an_entry(tmp_path: Path) -> None:
    model = _model(tmp_path)
    params = HashParams()
    tree = walk(model, params, SMALL)
    empty = Verified(str(model), Manifest("model", params, ()), TrustMode.LOCK, "s", None, (), tree.files)
    with pytest.raises(UsageError) as info:
        empty.open("a.bin")
    assert str(info.value) == f"a.bin has no entry in the verified manifest for {model}"
    # one entry under another name stands for the file (a single file's manifest names it ".")
    one = Verified(
        str(model), Manifest("model", params, (FileEntry(".", 7, _h(b"weights")),)), TrustMode.LOCK, "s",
        None, (), tree.files,
    )  # fmt: skip
    with one.open("a.bin") as fh:
        assert fh.read() == b"weights"
    resized = Verified(
        str(model), Manifest("model", params, (FileEntry("a.bin", 8, _h(b"weights")),)), TrustMode.LOCK, "s",
        None, (), tree.files,
    )  # fmt: skip
    with pytest.raises(UsageError) as info:
        resized.open("a.bin")
    assert str(info.value) == f"a.bin has no entry in the verified manifest for {model}"


def test_open_after_the_file_was_replaced(tmp_path: Path) -> None:
    model = _model(tmp_path)
    verified = verify(model, lock=_lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"}))
    (model / "a.bin").unlink()
    (model / "a.bin").write_bytes(b"weights")
    with pytest.raises(IntegrityError) as info:
        verified.open("a.bin")
    assert str(info.value) == "changed after verification: a.bin is not the file that was hashed"


def test_open_after_the_file_was_touched(tmp_path: Path) -> None:
    model = _model(tmp_path)
    verified = verify(model, lock=_lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"}))
    st = os.stat(model / "a.bin")
    os.utime(model / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    with pytest.raises(IntegrityError, match=r"a\.bin is not the file that was hashed"):
        verified.open("a.bin")


def test_open_after_the_file_was_removed(tmp_path: Path) -> None:
    model = _model(tmp_path)
    verified = verify(model, lock=_lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"}))
    (model / "a.bin").unlink()
    with pytest.raises(IntegrityError) as info:
        verified.open("a.bin")
    assert str(info.value) == "changed after verification: a.bin cannot be opened (No such file or directory)"


def test_open_never_follows_a_link_planted_after_verification(tmp_path: Path) -> None:
    model = _model(tmp_path)
    verified = verify(model, lock=_lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"}))
    (model / "a.bin").rename(tmp_path / "moved")
    (model / "a.bin").symlink_to(tmp_path / "moved")
    with pytest.raises(IntegrityError) as info:
        verified.open("a.bin")
    assert str(info.value) == (
        "changed after verification: a.bin cannot be opened (Too many levels of symbolic links)"
    )


def test_open_follows_a_link_that_was_verified(tmp_path: Path) -> None:
    model = _model(tmp_path)
    (model / "link").symlink_to("a.bin")
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text", "link": b"weights"})
    verified = verify(model, lock=lock, unsafe_allow_symlinks=True)
    with verified.open("link") as fh:
        assert fh.read() == b"weights"


def test_open_of_a_fifo_planted_after_verification_does_not_block(tmp_path: Path) -> None:
    model = _model(tmp_path)
    verified = verify(model, lock=_lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text"}))
    (model / "a.bin").unlink()
    os.mkfifo(model / "a.bin")
    with pytest.raises(IntegrityError) as info:
        verified.open("a.bin")
    assert str(info.value) == "changed after verification: a.bin is not the file that was hashed"


# -- the copy itself -------------------------------------------------------------------------------


def _fd(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "f"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_copy_of_whole_file(tmp_path: Path) -> None:
    fd = _fd(tmp_path, b"weights")
    try:
        out = _verify._verified_copy(fd, "f", FileEntry("f", 7, _h(b"weights")), Algorithm.SHA256)
    finally:
        os.close(fd)
    with os.fdopen(out, "rb") as fh:
        assert fh.read() == b"weights"


def test_copy_reads_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_verify, "_COPY_CHUNK", 3)
    fd = _fd(tmp_path, b"weights")
    try:
        shards = (ShardDigest(0, 5, _h(b"weigh")), ShardDigest(5, 7, _h(b"ts")))
        out = _verify._verified_copy(fd, "f", FileEntry("f", 7, None, shards), Algorithm.SHA256)
    finally:
        os.close(fd)
    with os.fdopen(out, "rb") as fh:
        assert fh.read() == b"weights"


def test_copy_of_a_file_shorter_than_its_entry(tmp_path: Path) -> None:
    before = _open_fds()
    fd = _fd(tmp_path, b"weights")
    try:
        with pytest.raises(IntegrityError) as info:
            _verify._verified_copy(fd, "f", FileEntry("f", 8, _h(b"weights!")), Algorithm.SHA256)
    finally:
        os.close(fd)
    assert str(info.value) == "changed after verification: f is shorter than 8 bytes"
    assert _open_fds() == before


def test_copy_with_another_digest(tmp_path: Path) -> None:
    before = _open_fds()
    fd = _fd(tmp_path, b"weights")
    try:
        shards = (ShardDigest(0, 4, _h(b"weig")), ShardDigest(4, 7, _h(b"htz")))
        with pytest.raises(IntegrityError) as info:
            _verify._verified_copy(fd, "f", FileEntry("f", 7, None, shards), Algorithm.SHA256)
    finally:
        os.close(fd)
    assert str(info.value) == "changed after verification: f bytes 4..7 no longer have the verified digest"
    assert _open_fds() == before


def test_copy_uses_the_manifest_algorithm(tmp_path: Path) -> None:
    fd = _fd(tmp_path, b"weights")
    try:
        out = _verify._verified_copy(
            fd, "f", FileEntry("f", 7, hashlib.blake2b(b"weights").hexdigest()), Algorithm.BLAKE2B
        )
        os.close(out)
        with pytest.raises(IntegrityError):
            _verify._verified_copy(fd, "f", FileEntry("f", 7, _h(b"weights")), Algorithm.BLAKE2B)
    finally:
        os.close(fd)


def test_single_file_view_is_the_same_expectation_under_dot(tmp_path: Path) -> None:
    from airlock.integrity._compare import Expected, ExpectedFile

    model = _model(tmp_path)
    params = HashParams(method=Method.SHARDS, shard_size=4)
    tree = walk(model / "a.bin", params, SMALL)
    shards = (ShardDigest(0, 4, _h(b"weig")), ShardDigest(4, 7, _h(b"hts")))
    expected = Expected(
        Algorithm.BLAKE2B, Method.SHARDS, 4, {"a.bin": ExpectedFile("a.bin", 7, None, shards)}, "lock file x"
    )
    assert _verify._single_file_view(expected, tree) == Expected(
        Algorithm.BLAKE2B, Method.SHARDS, 4, {".": ExpectedFile(".", 7, None, shards)}, "lock file x"
    )


def test_open_asks_for_cloexec_nofollow_and_nonblock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a spy on os.open: the model file is opened close-on-exec (no child process inherits it while
    # it is copied), without following a link planted since, and without blocking on a FIFO
    model = _model(tmp_path)
    (model / "link").symlink_to("a.bin")
    lock = _lock(tmp_path, {"a.bin": b"weights", "sub/b.txt": b"text", "link": b"weights"})
    verified = verify(model, lock=lock, unsafe_allow_symlinks=True)
    seen: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: str, flags: int, *args: int) -> int:
        seen.append((os.path.basename(path), flags))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", spy)
    for rel in ("a.bin", "link"):
        verified.open(rel).close()
    base = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    assert seen == [("a.bin", base | os.O_NOFOLLOW), ("link", base)]


def test_chain_from_the_bundle_and_from_the_command_line(tmp_path: Path) -> None:
    model = _model(tmp_path)
    ca = make_ca()
    middle = issue(ca, "intermediate", is_ca=True)
    leaf = issue(middle, "signer")
    cert, key = write_issued(tmp_path, "leaf", leaf)
    mid_pem = tmp_path / "mid.pem"
    mid_pem.write_bytes(middle.cert.public_bytes(serialization.Encoding.PEM))
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    # the bundle carries the intermediate: the CA alone verifies it
    carried = tmp_path / "carried.sig"
    sign(model, key=key, certificate=cert, chain=[mid_pem], output=carried)
    assert verify(model, signature=carried, certs=[ca_pem]).mode is TrustMode.CERTIFICATE
    # the bundle carries the leaf only: the intermediate must come from --certificate-chain
    bare = tmp_path / "bare.sig"
    sign(model, key=key, certificate=cert, output=bare)
    assert verify(model, signature=bare, certs=[ca_pem], chain=[mid_pem]).mode is TrustMode.CERTIFICATE
    with pytest.raises(IntegrityError):
        verify(model, signature=bare, certs=[ca_pem])


@pytest.mark.parametrize(("option", "label"), [("certs", "CA certificate"), ("chain", "certificate chain")])
def test_unreadable_certificate_files_are_named(tmp_path: Path, option: str, label: str) -> None:
    model = _model(tmp_path)
    sig, ca_pem, _ = _ca_signed(tmp_path, model)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n", encoding="utf-8")
    kwargs: dict[str, object] = (
        {"certs": [junk]} if option == "certs" else {"certs": [ca_pem], "chain": [junk]}
    )
    message = _usage(path=model, signature=sig, **kwargs)
    assert message.startswith(f"{label} {junk} holds no readable PEM certificate: ")


def test_forged_payload_under_a_certificate_names_the_certificate(tmp_path: Path) -> None:
    model = _model(tmp_path)
    sig, ca_pem, leaf = _ca_signed(tmp_path, model)
    bundle = json.loads(sig.read_text())
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload.replace(b"a.bin", b"a.bim")).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(IntegrityError) as info:
        verify(model, signature=sig, certs=[ca_pem])
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
    assert str(info.value) == (
        "signature check: the DSSE signature does not verify with certificate CN=signer "
        f"(sha256 fingerprint {fingerprint})"
    )


def test_sigstore_payload_must_be_the_bundle_payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the Sigstore verifier checks its own parse of the bundle; should it ever verify another
    # payload than the one airlock reads the digests from, nothing is trusted
    from airlock.integrity import _sigstore

    model = _model(tmp_path)
    sig, _, _ = _ca_signed(tmp_path, model)
    bundle = json.loads(sig.read_text())
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    payload_type = bundle["dsseEnvelope"]["payloadType"]
    answers = iter([(payload_type, payload + b" "), ("other/type", payload), (payload_type, payload)])

    def verified_by_sigstore(*args: object, **kwargs: object) -> tuple[str, bytes, str]:
        got_type, got_payload = next(answers)
        return got_type, got_payload, "me@example.com (issuer https://issuer)"

    monkeypatch.setattr(_sigstore, "verify_sigstore_bundle", verified_by_sigstore)
    for _ in range(2):
        with pytest.raises(IntegrityError) as info:
            verify(model, signature=sig, trust_root=sig, identity="me", issuer="https://issuer")
        assert str(info.value) == "sigstore check: the verified payload is not the bundle's payload"
    verified = verify(model, signature=sig, trust_root=sig, identity="me", issuer="https://issuer")
    assert verified.mode is TrustMode.SIGSTORE
    assert verified.signer == "me@example.com (issuer https://issuer)"


def test_expected_digest_source_is_the_file_under_dot() -> None:
    from airlock.integrity._compare import Expected, ExpectedFile

    digest = _h(b"weights")
    source = _verify._load_source(
        "/m", expect=f"sha256:{digest}", lock=None, signature=None, key=None, certs=(), chain=(),
        trust_root=None, identity=None, issuer=None, limits=SMALL,
    )  # fmt: skip
    assert source == _verify._Source(
        Expected(
            Algorithm.SHA256,
            Method.FILES,
            None,
            {".": ExpectedFile(".", None, digest)},
            f"digest sha256:{digest}",
        ),
        TrustMode.DIGEST,
        None,
    )


def test_unreadable_expected_digest_is_named(tmp_path: Path) -> None:
    from airlock.errors import FormatError

    model = _model(tmp_path)
    with pytest.raises(FormatError) as info:
        verify(model / "a.bin", expect="sha256:abc")
    assert str(info.value).startswith("expected digest: ")


def test_missing_or_oversized_signature_file_is_named(tmp_path: Path) -> None:
    model = _model(tmp_path)
    priv, pub = write_key_pair(tmp_path, "k")
    missing = tmp_path / "none.sig"
    assert _usage(path=model, signature=missing, key=pub) == (
        f"cannot read signature {missing}: No such file or directory"
    )
    sig = tmp_path / "model.sig"
    sign(model, key=priv, output=sig)
    size = sig.stat().st_size
    with pytest.raises(LimitError) as info:
        verify(model, signature=sig, key=pub, limits=HashLimits(max_document_bytes=size - 1))
    assert str(info.value) == f"signature size limit: {sig} is {size} bytes, limit {size - 1}"
    assert (
        verify(model, signature=sig, key=pub, limits=HashLimits(max_document_bytes=size)).mode
        is TrustMode.KEY
    )
