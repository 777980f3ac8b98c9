"""``airlock audit verify --config FILE``: check the gateway's hash-chained audit log."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from airlock.gateway import load_config, open_store, verify_chain
from airlock.gateway._audit import load_key, read_head

__all__ = ["COMMAND"]


@dataclass(frozen=True)
class AuditCommand:
    name: str = "audit"
    help: str = "verify the hash chain of the airlock serve audit log"
    description: str = (
        "Recompute the audit log's HMAC chain with the key named by [audit] key_file and report every "
        "edited, removed or reordered row. The chain must also reach the head the gateway last wrote to "
        "[audit] head_file (at start, every few seconds and at shutdown; a missing head file fails), "
        "so rows cut from the end after a crash "
        "are caught too; --expect-head checks against a head recorded elsewhere as well. "
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
        key = load_key(config.audit.key_file, create=False)
        recorded = read_head(config.audit.head_file, key)
        store = open_store(config)
        try:
            report = verify_chain(store.audit_rows(), key, expect_head=args.expect_head, recorded=recorded)
        finally:
            store.close()
        problems = list(report.problems)
        if recorded is None:
            # the gateway writes the head file when it starts, before serving (the key file this
            # check just read is created at that start too): a missing head file was removed,
            # perhaps with every row after it, even all of them; fail closed
            problems.append(
                f"no head file at {config.audit.head_file} although the gateway has run (the log has "
                f"{report.rows} row(s)): rows cut from the end cannot be ruled out "
                "(check --expect-head against a logged head)"
            )
        for problem in problems:
            print(f"TAMPERED: {problem}")
        state = "intact" if not problems else f"TAMPERED ({len(problems)} problem(s))"
        print(f"audit log {state}: {report.rows} row(s), head {report.head}")
        return 0 if not problems else 1


COMMAND = AuditCommand()
