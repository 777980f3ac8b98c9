"""``airlock certs dev``: a local CA, a server certificate and client certificates for development."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from airlock.gateway import dev_certificates
from airlock.gateway._config import check_name

__all__ = ["COMMAND"]


@dataclass(frozen=True)
class CertsCommand:
    name: str = "certs"
    help: str = "make a development CA, server certificate and mTLS client certificates"
    description: str = (
        "certs dev writes ca.pem/ca.key, server.pem/server.key (for every --host) and, per --client TENANT, "
        "client-TENANT.pem/.key (CN = tenant, for mTLS) into --out. Development only: keys are unencrypted "
        "(mode 0600) and the CA is yours alone. Exit codes: 0 done, 2 error."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=("dev",), help="make development certificates")
        parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the files into")
        parser.add_argument(
            "--host",
            action="append",
            default=[],
            metavar="NAME|IP",
            help="server name or address (repeatable)",
        )
        parser.add_argument(
            "--client",
            action="append",
            default=[],
            metavar="TENANT",
            help="client certificate for TENANT (repeatable)",
        )
        parser.add_argument("--days", type=int, default=30, help="validity in days (default 30)")

    def run(self, args: argparse.Namespace) -> int:
        hosts = args.host or ["localhost", "127.0.0.1", "::1"]
        tenants = [check_name("tenant", t) for t in args.client]
        made = dev_certificates(Path(args.out), hosts, tenants, args.days)
        print(f"CA:     {made.ca_cert} (key {made.ca_key})")
        print(f"server: {made.server_cert} (key {made.server_key}) for {', '.join(hosts)}")
        for tenant, (cert, key) in made.clients.items():
            print(f"client: {cert} (key {key}) CN={tenant}")
        return 0


COMMAND = CertsCommand()
