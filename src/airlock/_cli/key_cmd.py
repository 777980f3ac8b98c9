"""``airlock key create|revoke|list --config FILE``: API keys of a gateway's tenants."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

from airlock.errors import UsageError
from airlock.gateway import create_key, load_config, open_store
from airlock.gateway._config import check_name

__all__ = ["COMMAND"]


@dataclass(frozen=True)
class KeyCommand:
    name: str = "key"
    help: str = "create, revoke or list API keys of airlock serve tenants"
    description: str = (
        "create prints a new key once (256 random bits; only its SHA-256 hash is stored) with its key id. "
        "--scope MODEL (repeatable) limits the key to those models; without it the key may call every "
        "model served to its tenant. revoke KEY_ID takes effect at the next request, also on a running "
        "gateway. list never shows tokens. Exit codes: 0 done, 2 error."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=("create", "revoke", "list"), help="what to do")
        parser.add_argument("key_id", nargs="?", metavar="KEY_ID", help="the key to revoke")
        parser.add_argument(
            "--config", required=True, metavar="FILE.toml", help="the gateway config naming the state"
        )
        parser.add_argument("--tenant", metavar="NAME", help="tenant of the new key (create), or to list")
        parser.add_argument(
            "--scope",
            action="append",
            default=[],
            metavar="MODEL",
            help="a model this key may call (repeatable)",
        )

    def run(self, args: argparse.Namespace) -> int:
        config = load_config(args.config)
        store = open_store(config)
        try:
            if args.action == "create":
                if not args.tenant:
                    raise UsageError("key create needs --tenant")
                scopes = tuple(check_name("model", s) for s in args.scope)
                record, token = create_key(store, check_name("tenant", args.tenant), scopes)
                print(f"key id: {record.key_id}  tenant: {record.tenant}  scopes: {', '.join(scopes) or 'all its models'}",
                      file=sys.stderr)  # fmt: skip
                print("this token is shown once; store it now:", file=sys.stderr)
                print(token)
                return 0
            if args.action == "revoke":
                if not args.key_id:
                    raise UsageError("key revoke needs a KEY_ID")
                if not store.revoke_key(args.key_id, time.time()):
                    raise UsageError(f"no active key with id {args.key_id!r}")
                print(f"key {args.key_id} revoked")
                return 0
            for key in store.keys(args.tenant):
                print(json.dumps({"key_id": key.key_id, "tenant": key.tenant, "scopes": list(key.scopes),
                                  "created": key.created, "revoked": key.revoked}))  # fmt: skip
            return 0
        finally:
            store.close()


COMMAND = KeyCommand()
