"""The state interface: tenants, keys, admission records and the audit log.

SQLite (:mod:`._sqlite_store`) is the embedded default. A PostgreSQL implementation of the same
protocol lets several stateless gateway replicas share tenants, keys and the audit chain; nothing
above this interface knows which one is in use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from airlock.gateway._config import LIMIT_FIELDS, TenantLimits

if TYPE_CHECKING:
    from airlock.gateway._audit import AuditHead

__all__ = [
    "AdmissionRecord",
    "AuditEntry",
    "AuditRow",
    "AuditUnavailable",
    "KeyRecord",
    "Store",
    "TenantRecord",
    "tenant_row",
]


def tenant_row(row: tuple[Any, ...]) -> TenantRecord:
    """A stored tenant row (name, created, then the LIMIT_FIELDS columns) as a record; the same
    table layout in every backend. A tenant stored before the text-model limits existed keeps
    their defaults; one without its own request limits uses the config's [defaults]."""
    name, created, *values = row
    if any(v is None for v in values[:3]):
        return TenantRecord(name, created, None)
    given = {f: int(v) for f, v in zip(LIMIT_FIELDS, values, strict=True) if v is not None}
    return TenantRecord(name, created, TenantLimits(**given))


class AuditUnavailable(Exception):
    """An audit row could not be written (full disk, I/O error, no key): the request is refused."""


@dataclass(frozen=True)
class TenantRecord:
    name: str
    created: float
    #: None: the config's [defaults]
    limits: TenantLimits | None


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    tenant: str
    #: sha256 of the whole token; the token itself is never stored
    token_hash: bytes
    #: model names this key may call; empty = every model served to its tenant
    scopes: tuple[str, ...]
    created: float
    revoked: float | None


@dataclass(frozen=True)
class AdmissionRecord:
    model: str
    path: str
    digest: str
    #: how integrity was checked: "sha256 digest", "signature", or "none configured"
    integrity: str
    verdict: str
    #: "admitted" or "refused"
    decision: str
    reason: str
    #: findings as plain dicts (rule, severity, message, location, callable)
    findings: tuple[dict[str, str], ...]
    time: float


@dataclass(frozen=True)
class AuditEntry:
    """The fields of an audit row before the store numbers and chains it."""

    time: float
    tenant: str
    key_id: str
    model: str
    model_digest: str
    request_id: str
    decision: str
    status: int
    #: text models: the tokens the request used (never its text)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: text models: the guard's decisions (canonical JSON of direction -> decision and rule counts;
    #: never text); empty when the model is not guarded
    guard: str = ""


@dataclass(frozen=True)
class AuditRow:
    seq: int
    time: float
    tenant: str
    key_id: str
    model: str
    model_digest: str
    request_id: str
    decision: str
    status: int
    prev_hash: str
    row_hash: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: text models: the guard's decisions (canonical JSON of direction -> decision and rule counts;
    #: never text); empty when the model is not guarded
    guard: str = ""


class Store(Protocol):
    def add_tenant(self, name: str, limits: TenantLimits | None) -> TenantRecord:
        """Raise UsageError when the tenant exists."""
        ...

    def tenant(self, name: str) -> TenantRecord | None: ...

    def tenants(self) -> list[TenantRecord]: ...

    def add_key(self, record: KeyRecord) -> None: ...

    def key(self, key_id: str) -> KeyRecord | None: ...

    def keys(self, tenant: str | None) -> list[KeyRecord]: ...

    def revoke_key(self, key_id: str, when: float) -> bool:
        """True when the key existed and was not revoked yet."""
        ...

    def put_admission(self, record: AdmissionRecord) -> None: ...

    def admission(self, model: str) -> AdmissionRecord | None: ...

    def append_audit(
        self,
        time: float,
        tenant: str,
        key_id: str,
        model: str,
        model_digest: str,
        request_id: str,
        decision: str,
        status: int,
    ) -> AuditRow:
        """Append one row, chained to the previous one (atomically: concurrent writers serialise).

        Raise :class:`AuditUnavailable` when it cannot be written."""
        ...

    def append_audit_many(self, entries: list[AuditEntry]) -> list[AuditRow]:
        """Append ``entries`` in order in one transaction (all or none); AuditUnavailable when not."""
        ...

    def audit_head(self) -> AuditHead:
        """The last row's seq and MAC (seq 0 and the genesis hash for an empty log)."""
        ...

    def audit_rows(self, start: int = 1) -> Iterator[AuditRow]:
        """The rows from seq ``start`` on (every row by default), by seq."""
        ...

    def close(self) -> None: ...
