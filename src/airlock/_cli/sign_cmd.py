"""``airlock sign PATH --key PRIV.pem -o SIG``: an OMS (OpenSSF model signing) Sigstore bundle."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from airlock._cli.hash_cmd import add_hash_options, limits_from_args
from airlock.errors import IntegrityError, UsageError
from airlock.integrity import sign

__all__ = ["COMMAND"]


@dataclass(frozen=True)
class SignCommand:
    name: str = "sign"
    help: str = "sign a model with an EC key (OpenSSF model signing bundle)"
    description: str = (
        "Hash every file of PATH and sign the manifest with an EC private key (P-256, P-384 or P-521), "
        "writing an OMS Sigstore bundle (in-toto statement in a DSSE envelope) that model_signing "
        "1.1.1 and airlock verify. With --cert the bundle carries the certificate chain (certificate "
        "method). Exit codes: 0 signed, 1 the model holds files that cannot be hashed, 2 error or usage."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_hash_options(parser)
        parser.add_argument(
            "--key", required=True, metavar="PRIV.pem", help="PEM EC private key to sign with"
        )
        parser.add_argument(
            "--key-password-file",
            metavar="FILE",
            help="file whose first line is the private key's password (for encrypted keys)",
        )
        parser.add_argument(
            "-o", "--output", required=True, metavar="SIG", help="where to write the signature bundle (JSON)"
        )
        parser.add_argument(
            "--cert", metavar="CERT.pem", help="signing certificate for the key (OMS certificate method)"
        )
        parser.add_argument(
            "--chain",
            action="append",
            default=[],
            metavar="CHAIN.pem",
            help="intermediate/CA certificates to include after --cert; repeatable",
        )

    def run(self, args: argparse.Namespace) -> int:
        password = None
        if args.key_password_file:
            try:
                with open(args.key_password_file, "rb") as fh:
                    password = fh.readline(4096).rstrip(b"\r\n")
            except OSError as exc:
                raise UsageError(f"cannot read {args.key_password_file}: {exc.strerror}") from exc
        try:
            manifest = sign(
                args.path,
                key=args.key,
                output=args.output,
                certificate=args.cert,
                chain=args.chain,
                password=password,
                algorithm=args.algorithm,
                shard_size=args.shard_size,
                allow_symlinks=args.allow_symlinks,
                exclude=args.exclude,
                limits=limits_from_args(args),
            )
        except IntegrityError as exc:
            print(f"airlock sign: {exc}", file=sys.stderr)
            return 1
        print(
            f"signed {len(manifest.files)} files of {manifest.name} ({manifest.total_bytes} bytes, "
            f"root digest sha256:{manifest.root_digest}) -> {os.fspath(args.output)}"
        )
        return 0


COMMAND = SignCommand()
