"""Every signer requirement given to ``verify`` is checked, or the request is refused.

Outside review 24: with ``--key``, ``verify`` went on to say "verified" although ``--identity`` and
``--issuer`` named a signer it never looked at (a key-method bundle has no identity), and a
``--chain`` given with ``--key`` or ``--trust-root`` was dropped unread. A requirement the user wrote
down was silently not a requirement. Each signer option now names the trust methods it applies to
(an allowlist); given with any other it is a usage error (exit 2), before anything is hashed, as
``--identity`` with ``--cert`` already was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock._cli import main
from airlock.errors import UsageError
from airlock.integrity import TrustMode, sign, verify
from tests.integrity.integrity_helpers import build_model, issue, make_ca, write_issued


def test_key_method_still_verifies_with_only_its_own_options(signed: tuple[Path, Path, Path]) -> None:
    model, sig, public = signed
    assert verify(model, signature=sig, key=public).mode is TrustMode.KEY


KEYLESS_ONLY = "--identity and --issuer apply to Sigstore keyless bundles (--trust-root)"
CHAIN_ONLY = "--chain applies to the certificate method (--cert)"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"identity": "release@example.org"}, KEYLESS_ONLY),
        ({"issuer": "https://accounts.example.org"}, KEYLESS_ONLY),
        ({"identity": "release@example.org", "issuer": "https://accounts.example.org"}, KEYLESS_ONLY),
        ({"chain": ["intermediate.pem"]}, CHAIN_ONLY),
    ],
    ids=["identity", "issuer", "identity+issuer", "chain"],
)
def test_key_method_refuses_requirements_it_cannot_check(
    signed: tuple[Path, Path, Path], extra: dict[str, object], message: str
) -> None:
    model, sig, public = signed
    with pytest.raises(UsageError) as info:
        verify(model, signature=sig, key=public, **extra)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_cli_key_with_identity_is_a_usage_error_not_verified(
    signed: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, sig, public = signed
    args = ["verify", str(model), "--signature", str(sig), "--key", str(public)]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--identity", "mallory@example.org", "--issuer", "https://evil.example"]) == 2
    captured = capsys.readouterr()
    assert "verified" not in captured.out
    assert KEYLESS_ONLY in captured.err


def test_trust_root_refuses_a_chain(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, sig, _ = signed
    root = tmp_path / "trusted_root.json"
    root.write_text("{}")
    with pytest.raises(UsageError) as info:
        verify(
            model, signature=sig, trust_root=root, identity="a@example.org", issuer="https://x", chain=[root]
        )
    assert str(info.value) == CHAIN_ONLY


def test_certificate_method_keeps_its_chain(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    ca = make_ca()
    leaf_cert, leaf_key = write_issued(tmp_path, "leaf", issue(ca, "model publisher"))
    ca_cert, _ = write_issued(tmp_path, "ca", ca)
    sig = tmp_path / "model.sig"
    sign(model, key=leaf_key, certificate=leaf_cert, output=sig)
    assert verify(model, signature=sig, certs=[ca_cert], chain=[ca_cert]).mode is TrustMode.CERTIFICATE
