"""``airlock tenant add|list --config FILE``: the tenants of a gateway's state."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from airlock.gateway import TenantLimits, load_config, open_store
from airlock.gateway._config import LIMIT_FIELDS, check_name

__all__ = ["COMMAND"]


@dataclass(frozen=True)
class TenantCommand:
    name: str = "tenant"
    help: str = "add or list the tenants of an airlock serve gateway"
    description: str = (
        "Manage tenants in the state named by the gateway config (--config FILE.toml). A tenant sees and "
        "calls only the models whose config lists it, each through workers of its own. Limits not given "
        "here come from the config's [defaults]. Exit codes: 0 done, 2 error."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=("add", "list"), help="add a tenant, or list every tenant")
        parser.add_argument("tenant", nargs="?", metavar="NAME", help="tenant name (for add): a-z 0-9 _ . -")
        parser.add_argument(
            "--config", required=True, metavar="FILE.toml", help="the gateway config naming the state"
        )
        parser.add_argument(
            "--requests-per-minute", type=int, metavar="N", help="request budget (token bucket)"
        )
        parser.add_argument(
            "--tensor-bytes-per-minute", type=int, metavar="N", help="input tensor bytes budget"
        )
        parser.add_argument("--max-concurrent", type=int, metavar="N", help="requests in flight at once")
        parser.add_argument(
            "--tokens-per-minute", type=int, metavar="N",
            help="text models: prompt + completion tokens budget (token bucket)",
        )  # fmt: skip
        parser.add_argument(
            "--max-generations", type=int, metavar="N", help="text models: generations running at once"
        )

    def run(self, args: argparse.Namespace) -> int:
        config = load_config(args.config)
        store = open_store(config)
        try:
            if args.action == "list":
                for tenant in store.tenants():
                    shown = tenant.limits or config.defaults
                    print(json.dumps({"tenant": tenant.name, "created": tenant.created,
                                      "limits": "defaults" if tenant.limits is None else "own",
                                      **{f: getattr(shown, f) for f in LIMIT_FIELDS}}))  # fmt: skip
                return 0
            name = check_name("tenant", args.tenant)
            given = {f: getattr(args, f) for f in LIMIT_FIELDS}
            limits: TenantLimits | None = None
            if any(v is not None for v in given.values()):
                limits = TenantLimits(
                    **{f: getattr(config.defaults, f) if v is None else v for f, v in given.items()}
                )
            store.add_tenant(name, limits)
            print(f"tenant {name} added")
            return 0
        finally:
            store.close()


COMMAND = TenantCommand()
