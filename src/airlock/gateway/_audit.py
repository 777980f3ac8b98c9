"""The audit chain: each row's hash covers its fields and the previous row's hash.

``row_hash = sha256(prev_hash || canonical JSON of (seq, time, tenant, key_id, model, model_digest,
request_id, decision, status))``. Editing a row breaks its hash; removing or reordering rows breaks
the ``seq`` run and the ``prev_hash`` link. Removing rows *at the end* leaves a shorter valid chain:
that is caught only against a head recorded elsewhere (``airlock audit verify --expect-head``; the
gateway logs the head at shutdown).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from airlock.gateway._store import AuditRow

__all__ = ["GENESIS", "AuditReport", "chain_hash", "verify_chain"]

GENESIS: Final = "0" * 64


def chain_hash(
    prev_hash: str,
    seq: int,
    time: float,
    tenant: str,
    key_id: str,
    model: str,
    model_digest: str,
    request_id: str,
    decision: str,
    status: int,
) -> str:
    body = json.dumps(
        [seq, repr(time), tenant, key_id, model, model_digest, request_id, decision, status],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + body.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class AuditReport:
    rows: int
    head: str
    #: one line per broken link; empty when the chain is intact
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(rows: Iterable[AuditRow], *, expect_head: str | None = None) -> AuditReport:
    """Recompute the chain; report every row whose position, link or content does not check out."""
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    count = 0
    for row in rows:
        count += 1
        if row.seq != expected_seq:
            problems.append(
                f"row seq {row.seq}: expected seq {expected_seq} (a row was removed or reordered)"
            )
        if row.prev_hash != prev:
            problems.append(f"row seq {row.seq}: prev_hash does not match the previous row's hash")
        recomputed = chain_hash(
            row.prev_hash, row.seq, row.time, row.tenant, row.key_id, row.model,
            row.model_digest, row.request_id, row.decision, row.status,
        )  # fmt: skip
        if recomputed != row.row_hash:
            problems.append(f"row seq {row.seq}: content does not match its hash (the row was edited)")
        prev = row.row_hash
        expected_seq = row.seq + 1
    if expect_head is not None and expect_head != prev:
        problems.append(f"chain head is {prev}, expected {expect_head} (rows removed at the end, or edited)")
    return AuditReport(count, prev, tuple(problems))
