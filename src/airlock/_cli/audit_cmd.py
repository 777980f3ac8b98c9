"""``airlock audit verify --config FILE``: check the gateway's hash-chained audit log."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from airlock.gateway import load_config, open_store, verify_chain

__all__ = ["COMMAND"]


@dataclass(frozen=True)
class AuditCommand:
    name: str = "audit"
    help: str = "verify the hash chain of the airlock serve audit log"
    description: str = (
        "Recompute the audit log's hash chain and report every edited, removed or reordered row. Rows "
        "removed from the very end leave a valid shorter chain: pass the head you recorded earlier "
        "(printed here and logged by the gateway at shutdown) with --expect-head to catch that too. "
        "Exit codes: 0 intact, 1 tampered, 2 error."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=("verify",), help="verify the chain")
        parser.add_argument(
            "--config", required=True, metavar="FILE.toml", help="the gateway config naming the state"
        )
        parser.add_argument(
            "--expect-head", metavar="HEX", help="the chain head recorded earlier (sha256 hex)"
        )

    def run(self, args: argparse.Namespace) -> int:
        config = load_config(args.config)
        store = open_store(config)
        try:
            report = verify_chain(store.audit_rows(), expect_head=args.expect_head)
        finally:
            store.close()
        for problem in report.problems:
            print(f"TAMPERED: {problem}")
        state = "intact" if report.ok else f"TAMPERED ({len(report.problems)} problem(s))"
        print(f"audit log {state}: {report.rows} row(s), head {report.head}")
        return 0 if report.ok else 1


COMMAND = AuditCommand()
