"""``airlock verify PATH``: check a model against a digest, a lock file or a signature. Strict."""

from __future__ import annotations

import sys

from airlock.errors import IntegrityError

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (``airlock scan`` imports this module)
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from airlock.integrity import Verified

__all__ = ["COMMAND"]


def _report(verified: Verified) -> dict[str, object]:
    import json

    return {
        "verified": True,
        "path": verified.path,
        "mode": verified.mode.value,
        "source": verified.source,
        "signer": verified.signer,
        "unsafe": list(verified.unsafe),
        "manifest": json.loads(verified.manifest.to_json()),
    }


class VerifyCommand:
    # a plain class, like ScanCommand: ``airlock scan`` imports this module for its trust flags,
    # and a dataclass here would import ``dataclasses`` (and ``inspect``) at every scan's start-up
    name = "verify"
    help = "check a model against a digest, lock file or signature (strict)"
    description = (
        "Verify PATH against exactly one trust source: --expect ALG:HEX (one file), --lock FILE "
        "(known-good digests per file), or --signature SIG (an OMS Sigstore bundle) with --key, --cert "
        "or --trust-root. Strict: extra, missing and changed files, symbolic links and special files "
        "all fail, each listed. Exit codes: 0 verified, 1 integrity failure, 2 error or usage."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", metavar="PATH", help="model file or folder to verify")
        add_trust_arguments(parser)
        parser.add_argument("--workers", type=int, metavar="N", help="hashing threads (default: CPU count)")
        parser.add_argument("--format", choices=["text", "json"], default="text", help="output format")

    def run(self, args: argparse.Namespace) -> int:
        import json

        unsafe = unsafe_flags(args)
        try:
            verified = verify_from_args(args, args.path, command="verify")
        except IntegrityError as exc:
            if args.format == "json":
                problems = list(getattr(exc, "problems", ())) or [str(exc)]
                doc = {"verified": False, "path": args.path, "problems": problems, "unsafe": unsafe}
                sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            print(f"airlock verify: FAILED: {exc}", file=sys.stderr)
            return 1
        if args.format == "json":
            sys.stdout.write(json.dumps(_report(verified), indent=2, ensure_ascii=False) + "\n")
            return 0
        m = verified.manifest
        print(f"verified: {m.name} ({len(m.files)} files, {m.total_bytes} bytes) against {verified.source}")
        if verified.signer:
            print(f"signer: {verified.signer}")
        print(f"root digest: sha256:{m.root_digest}")
        for option in verified.unsafe:
            print(f"UNSAFE option in force: {option}")
        return 0


def add_trust_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The trust-source, signer and --unsafe-... options, shared by ``verify`` and ``scan``."""
    title = "trust source (exactly one)" if required else "verify first (at most one trust source)"
    src = parser.add_argument_group(title)
    src.add_argument(
        "--expect", metavar="ALG:HEX", help="expected digest of a single file, e.g. sha256:ab12..."
    )
    src.add_argument(
        "--lock", metavar="FILE", help="lock file of known-good digests (formats: docs/integrity.md)"
    )
    src.add_argument("--signature", metavar="SIG", help="OMS signature bundle (model_signing / airlock sign)")
    trust = parser.add_argument_group("who may have signed (with --signature, exactly one)")
    trust.add_argument("--key", metavar="PUB.pem", help="PEM EC public key of the signer (OMS key method)")
    trust.add_argument(
        "--cert",
        action="append",
        default=[],
        metavar="CA.pem",
        help="trusted CA certificate(s) the signing certificate must chain to; repeatable",
    )
    trust.add_argument(
        "--chain",
        action="append",
        default=[],
        metavar="CHAIN.pem",
        help="extra intermediate certificates not carried in the bundle; repeatable",
    )
    trust.add_argument(
        "--trust-root",
        metavar="TRUSTED_ROOT.json",
        help="Sigstore trusted root file for keyless bundles (offline; never fetched)",
    )
    trust.add_argument("--identity", metavar="ID", help="expected Sigstore signer identity (email or URI)")
    trust.add_argument("--issuer", metavar="URL", help="expected OIDC issuer of the Sigstore identity")
    unsafe = parser.add_argument_group("weakening the check (each one is reported)")
    unsafe.add_argument(
        "--unsafe-ignore",
        action="append",
        default=[],
        metavar="RELPATH",
        help="UNSAFE: leave this relative path (file or folder) unchecked; repeatable",
    )
    unsafe.add_argument(
        "--unsafe-allow-extra",
        action="store_true",
        help="UNSAFE: accept files that the lock file or signature does not list",
    )
    unsafe.add_argument(
        "--unsafe-allow-symlinks",
        action="store_true",
        help="UNSAFE: follow symbolic links to regular files (they may point anywhere)",
    )


def trust_defaults() -> dict[str, object]:
    """What :func:`add_trust_arguments` sets when none of its flags is given (fresh lists each
    call), for a command that reads its common command lines without argparse."""
    return {
        "expect": None,
        "lock": None,
        "signature": None,
        "key": None,
        "cert": [],
        "chain": [],
        "trust_root": None,
        "identity": None,
        "issuer": None,
        "unsafe_ignore": [],
        "unsafe_allow_extra": False,
        "unsafe_allow_symlinks": False,
    }


def unsafe_flags(args: argparse.Namespace) -> list[str]:
    ignored = [f"--unsafe-ignore {p}" for p in args.unsafe_ignore]
    flags = (
        ("--unsafe-allow-extra", args.unsafe_allow_extra),
        ("--unsafe-allow-symlinks", args.unsafe_allow_symlinks),
    )
    return ignored + [flag for flag, on in flags if on]


def wants_verification(args: argparse.Namespace) -> bool:
    return any(getattr(args, name) for name in ("expect", "lock", "signature"))


def verify_from_args(args: argparse.Namespace, path: str, *, command: str) -> Verified:
    """Run :func:`airlock.integrity.verify` with the options :func:`add_trust_arguments` added."""
    # Imported here: the hashing and signature machinery (cryptography) is loaded only when a
    # command actually verifies, not by every ``airlock scan``.
    from airlock._cli.hash_cmd import limits_from_args
    from airlock.integrity import verify

    for flag in unsafe_flags(args):
        print(f"airlock {command}: WARNING: {flag} weakens the integrity check", file=sys.stderr)
    return verify(
        path,
        expect=args.expect,
        lock=args.lock,
        signature=args.signature,
        key=args.key,
        certs=args.cert,
        chain=args.chain,
        trust_root=args.trust_root,
        identity=args.identity,
        issuer=args.issuer,
        unsafe_ignore=args.unsafe_ignore,
        unsafe_allow_extra=args.unsafe_allow_extra,
        unsafe_allow_symlinks=args.unsafe_allow_symlinks,
        limits=limits_from_args(args) if hasattr(args, "workers") else None,
    )


COMMAND = VerifyCommand()
