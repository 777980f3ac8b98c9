"""The shared state on PostgreSQL (``[state] url = "postgresql://…"``): one database for N replicas.

psycopg 3 with a connection pool (psycopg_pool). Every read goes to the server (no cache), so a key
revoked through one replica, or with ``airlock key revoke``, is refused by every replica at its next
request. The audit chain has a head row (``airlock_audit_head``, one row): an append locks it with
``SELECT … FOR UPDATE``, inserts its rows after it and moves it, all in one transaction, so
concurrent replicas serialise on that lock and the chain never forks.

Bounded waits: connecting (``connect_timeout``), waiting for a pooled connection, every statement
(``statement_timeout``, lock waits included), unacknowledged writes (``tcp_user_timeout``) and a
transaction whose client stopped between statements (``idle_in_transaction_session_timeout``: the
head row's lock of a frozen replica is freed). A
failure marks the server down (:class:`._backend.Backend`); calls then fail at once with
:class:`BackendUnavailable` (audit appends with :class:`AuditUnavailable`) until the watch thread
reaches the server again.

The schema is versioned (``airlock_schema``); ``airlock serve --migrate`` applies what is missing
under an advisory lock. Opening a database at another version is refused with that advice.
"""

from __future__ import annotations

import json
import math
import time as _time
from collections.abc import Iterator
from typing import Any, Final

import psycopg
import psycopg_pool

from airlock.errors import UsageError
from airlock.gateway._audit import GENESIS, AuditHead, chain_hash
from airlock.gateway._backend import (
    THREADS,
    Backend,
    BackendConfig,
    BackendUnavailable,
    read_password,
    redact,
    warn_unauthenticated,
)
from airlock.gateway._config import LIMIT_FIELDS, TenantLimits
from airlock.gateway._store import (
    AdmissionRecord,
    AuditEntry,
    AuditRow,
    AuditUnavailable,
    KeyRecord,
    TenantRecord,
    tenant_row,
)

__all__ = ["MIGRATIONS", "PostgresStore", "migrate"]

#: (version, statements); append only — a released migration is never edited
MIGRATIONS: Final = (
    (1, """
CREATE TABLE airlock_tenants (
    name TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL,
    requests_per_minute BIGINT, tensor_bytes_per_minute BIGINT, max_concurrent BIGINT,
    tokens_per_minute BIGINT, max_generations BIGINT
);
CREATE TABLE airlock_keys (
    key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES airlock_tenants(name),
    token_hash BYTEA NOT NULL, scopes TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
    revoked DOUBLE PRECISION
);
CREATE TABLE airlock_admissions (model TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE airlock_audit (
    seq BIGINT PRIMARY KEY, time DOUBLE PRECISION NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL,
    model TEXT NOT NULL, model_digest TEXT NOT NULL, request_id TEXT NOT NULL, decision TEXT NOT NULL,
    status INTEGER NOT NULL, prev_hash TEXT NOT NULL, row_hash TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL DEFAULT 0, completion_tokens BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE airlock_audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, row_hash TEXT NOT NULL
);
INSERT INTO airlock_audit_head VALUES (1, 0, '""" + GENESIS + "');"),
    # a guarded text model's decisions (AuditEntry.guard): version 1 had no column for them, so they
    # were neither stored nor covered by the row's MAC. Rows written before keep '' (their MAC never
    # covered a guard, so the chain verifies as it did)
    (2, "ALTER TABLE airlock_audit ADD COLUMN guard TEXT NOT NULL DEFAULT '';"),
)  # fmt: skip
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]
#: airlock_audit's columns are named in AuditRow's order (a column added later never shifts a read)
_AUDIT_INSERT: Final = (
    b"INSERT INTO airlock_audit (seq, time, tenant, key_id, model, model_digest, request_id, decision, "
    b"status, prev_hash, row_hash, prompt_tokens, completion_tokens, guard) "
    b"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_AUDIT_PAGE: Final = (
    "SELECT seq, time, tenant, key_id, model, model_digest, request_id, decision, status, prev_hash, "
    "row_hash, prompt_tokens, completion_tokens, guard FROM airlock_audit WHERE seq > %s ORDER BY seq LIMIT 1000"
)
#: pg_advisory_xact_lock key of migrations (any constant; "airlock" in ASCII)
_MIGRATE_LOCK: Final = 0x61_69_72_6C_6F_63_6B
#: one connection for each of the gateway's threads and one for the watch: no call waits for one
_POOL_MAX: Final = THREADS + 1


#: libpq variables that no connection option names (service files, locale, session settings)
_LIBPQ_EXTRA_ENV: Final = (
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "PGLOCALEDIR",
    "PGREALM",
    "PGDATESTYLE",
    "PGTZ",
    "PGGEQO",
)
#: a file that cannot exist (ENOENT): named for each file libpq would otherwise take from the home
#: folder (~/.pgpass, ~/.postgresql/root.crt, postgresql.crt and .key), so it reads none of them
_NO_FILE: Final = "/proc/self/airlock-reads-no-file"


def _forget_libpq_environment() -> None:
    """libpq fills every connection option the URL and airlock leave unset from a ``PG*``
    environment variable (``PGHOSTADDR`` sends the connection to another address than the URL's
    host, ``PGSSLMODE``/``PGSSLROOTCERT`` change the TLS check, ``PGSERVICE`` reads a service file
    from the home folder), and the password from ``~/.pgpass``. The gateway's configuration is its
    file only (docs/serve.md): every variable libpq itself lists is removed from this process
    before the first connection (outside review 19)."""
    import os

    names = {option.envvar.decode() for option in psycopg.pq.Conninfo.get_defaults() if option.envvar}
    for name in sorted(names.union(_LIBPQ_EXTRA_ENV)):
        os.environ.pop(name, None)


def _connect_kwargs(config: BackendConfig) -> dict[str, Any]:
    _forget_libpq_environment()
    timeout_ms = int(config.timeout_seconds * 1000)
    kwargs: dict[str, Any] = {
        "connect_timeout": max(1, math.ceil(config.connect_timeout_seconds)),
        # idle_in_transaction_session_timeout: a replica that stops between the statements of an
        # append (frozen: SIGSTOP, a paused container or VM, whose kernel still answers keepalives)
        # held the audit head's row lock for good, and every other replica's appends timed out
        # behind it: the server now ends that session after the same bound and the lock is freed.
        # extra_float_digits=3: every float8 read back is the one written (an audit row's time is in
        # its MAC as repr(time)); a database or role default of 0 (PostgreSQL 11's own) rounded it to
        # 15 digits and a valid chain read as edited. Options sent at connect win over those defaults
        "options": (
            f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms} "
            f"-c idle_in_transaction_session_timeout={timeout_ms} -c extra_float_digits=3"
        ),
        "tcp_user_timeout": timeout_ms,
        "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
        "application_name": "airlock",
        "passfile": _NO_FILE,
        # no client certificate from ~/.postgresql/ (airlock has no option for one)
        "sslcert": _NO_FILE, "sslkey": _NO_FILE,
        "autocommit": True,
    }  # fmt: skip
    password = read_password(config)
    if password is not None:
        kwargs["password"] = password
    if config.sslmode is not None:
        kwargs["sslmode"] = config.sslmode
    if config.ca_file is not None:
        kwargs["sslrootcert"] = str(config.ca_file)
    elif config.sslmode == "verify-full":
        kwargs["sslrootcert"] = "system"  # the system's CAs (docs/serve.md), not ~/.postgresql/root.crt
    else:
        # ~/.postgresql/root.crt would turn require/prefer into a CA check against a file of the
        # home folder; verify-ca without ca_file is then libpq's own error (no root certificate)
        kwargs["sslrootcert"] = _NO_FILE
    return kwargs


def _version(conn: psycopg.Connection[Any]) -> int:
    exists = conn.execute("SELECT to_regclass('airlock_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT max(version) FROM airlock_schema").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(config: BackendConfig) -> tuple[int, int]:
    """Apply the missing migrations (one transaction, under an advisory lock); (before, after)."""
    try:
        with psycopg.connect(config.url, **_connect_kwargs(config)) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS airlock_schema (version INTEGER PRIMARY KEY, "
                "applied DOUBLE PRECISION NOT NULL)"
            )
            before = _version(conn)
            if before > SCHEMA_VERSION:
                raise UsageError(
                    f"state: schema version {before} is newer than this airlock's ({SCHEMA_VERSION})"
                )
            for version, statements in MIGRATIONS:
                if version > before:
                    conn.execute(statements.encode())
                    conn.execute("INSERT INTO airlock_schema VALUES (%s, %s)", (version, _time.time()))
    except psycopg.Error as exc:
        raise UsageError(
            f"state: migration of {redact(config.url)} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return before, SCHEMA_VERSION


class PostgresStore:
    name: Final = "postgresql"

    def __init__(self, config: BackendConfig, audit_key: bytes | None = None) -> None:
        self._audit_key = audit_key
        self._url = redact(config.url)
        self._pool = psycopg_pool.ConnectionPool(
            config.url, kwargs=_connect_kwargs(config), min_size=1, max_size=_POOL_MAX,
            timeout=config.connect_timeout_seconds, open=False, name="airlock-state",
        )  # fmt: skip
        try:
            self._pool.open(wait=True, timeout=config.connect_timeout_seconds + 1.0)
            with self._pool.connection() as conn:
                version = _version(conn)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            self._pool.close()
            raise UsageError(f"state: cannot reach PostgreSQL at {self._url} ({type(exc).__name__})") from exc
        if version != SCHEMA_VERSION:
            self._pool.close()
            raise UsageError(
                f"state: the database at {self._url} has schema version {version}, this airlock needs "
                f"{SCHEMA_VERSION}: run `airlock serve --config FILE --migrate` first"
            )
        warn_unauthenticated(
            "state", config,
            # libpq: "require" with a root certificate checks it as "verify-ca" does
            verified=config.sslmode in ("verify-ca", "verify-full")
            or (config.sslmode == "require" and config.ca_file is not None),
            advice='set [state] sslmode = "verify-full" (and ca_file for a private CA)',
        )  # fmt: skip
        self.backend = Backend(
            "state", config.url, self._probe, config.connect_timeout_seconds + config.timeout_seconds + 1.0
        )

    @property
    def available(self) -> bool:
        return self.backend.available

    def _probe(self) -> None:
        if not self.backend.available:
            self._pool.check()  # drop the connections the outage broke before saying it is back
        with self._pool.connection() as conn:
            conn.execute("SELECT 1")

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement on a pooled connection; BackendUnavailable when the server fails."""
        self.backend.check()
        try:
            with self._pool.connection() as conn:
                cursor = conn.execute(sql.encode(), params)
                return cursor.fetchall() if cursor.description is not None else [(cursor.rowcount,)]
        except psycopg.IntegrityError:
            raise
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise self.backend.failed(exc) from exc

    # tenants ---------------------------------------------------------------------------------

    def add_tenant(self, name: str, limits: TenantLimits | None) -> TenantRecord:
        record = TenantRecord(name, _time.time(), limits)
        values = tuple(getattr(limits, f) if limits else None for f in LIMIT_FIELDS)
        try:
            self._run(
                "INSERT INTO airlock_tenants (name, created, requests_per_minute, tensor_bytes_per_minute, "
                "max_concurrent, tokens_per_minute, max_generations) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (name, record.created, *values),
            )
        except psycopg.IntegrityError as exc:
            raise UsageError(f"tenant {name!r} already exists") from exc
        return record

    def tenant(self, name: str) -> TenantRecord | None:
        rows = self._run("SELECT * FROM airlock_tenants WHERE name = %s", (name,))
        return tenant_row(rows[0]) if rows else None

    def tenants(self) -> list[TenantRecord]:
        return [tenant_row(row) for row in self._run("SELECT * FROM airlock_tenants ORDER BY name")]

    # keys ------------------------------------------------------------------------------------

    def add_key(self, record: KeyRecord) -> None:
        self._run(
            "INSERT INTO airlock_keys VALUES (%s, %s, %s, %s, %s, %s)",
            (record.key_id, record.tenant, record.token_hash, json.dumps(list(record.scopes)),
             record.created, record.revoked),
        )  # fmt: skip

    @staticmethod
    def _key(row: tuple[Any, ...]) -> KeyRecord:
        key_id, tenant, token_hash, scopes, created, revoked = row
        return KeyRecord(key_id, tenant, bytes(token_hash), tuple(json.loads(scopes)), created, revoked)

    def key(self, key_id: str) -> KeyRecord | None:
        rows = self._run("SELECT * FROM airlock_keys WHERE key_id = %s", (key_id,))
        return self._key(rows[0]) if rows else None

    def keys(self, tenant: str | None) -> list[KeyRecord]:
        if tenant is None:
            rows = self._run("SELECT * FROM airlock_keys ORDER BY created")
        else:
            rows = self._run("SELECT * FROM airlock_keys WHERE tenant = %s ORDER BY created", (tenant,))
        return [self._key(row) for row in rows]

    def revoke_key(self, key_id: str, when: float) -> bool:
        rows = self._run(
            "UPDATE airlock_keys SET revoked = %s WHERE key_id = %s AND revoked IS NULL", (when, key_id)
        )
        return bool(rows[0][0] == 1)

    # admissions ------------------------------------------------------------------------------

    def put_admission(self, record: AdmissionRecord) -> None:
        data = {
            "model": record.model, "path": record.path, "digest": record.digest,
            "integrity": record.integrity, "verdict": record.verdict, "decision": record.decision,
            "reason": record.reason, "findings": list(record.findings), "time": record.time,
        }  # fmt: skip
        self._run(
            "INSERT INTO airlock_admissions VALUES (%s, %s) "
            "ON CONFLICT (model) DO UPDATE SET record = EXCLUDED.record",
            (record.model, json.dumps(data)),
        )

    def admission(self, model: str) -> AdmissionRecord | None:
        rows = self._run("SELECT record FROM airlock_admissions WHERE model = %s", (model,))
        if not rows:
            return None
        data = json.loads(rows[0][0])
        return AdmissionRecord(
            data["model"], data["path"], data["digest"], data["integrity"], data["verdict"],
            data["decision"], data["reason"], tuple(data["findings"]), data["time"],
        )  # fmt: skip

    # audit -----------------------------------------------------------------------------------

    def append_audit(
        self, time: float, tenant: str, key_id: str, model: str, model_digest: str, request_id: str,
        decision: str, status: int,
    ) -> AuditRow:  # fmt: skip
        entry = AuditEntry(time, tenant, key_id, model, model_digest, request_id, decision, status)
        return self.append_audit_many([entry])[0]

    def append_audit_many(self, entries: list[AuditEntry]) -> list[AuditRow]:
        if self._audit_key is None:
            raise AuditUnavailable("the store was opened without the audit key")
        key = self._audit_key
        rows: list[AuditRow] = []
        try:
            self.backend.check()
            with self._pool.connection() as conn, conn.transaction():
                # the head row's lock serialises every replica's appends: no two chain to one row
                head = conn.execute(
                    b"SELECT seq, row_hash FROM airlock_audit_head WHERE id = 1 FOR UPDATE"
                ).fetchone()
                if head is None:
                    raise AuditUnavailable("the audit head row is missing")
                seq, prev = int(head[0]) + 1, str(head[1])
                for entry in entries:
                    fields = (
                        entry.time, entry.tenant, entry.key_id, entry.model, entry.model_digest,
                        entry.request_id, entry.decision, entry.status,
                    )  # fmt: skip
                    tokens = (entry.prompt_tokens, entry.completion_tokens)
                    mac = chain_hash(key, prev, seq, *fields, tokens, entry.guard)
                    row = AuditRow(seq, *fields, prev, mac, *tokens, entry.guard)
                    rows.append(row)
                    seq, prev = seq + 1, row.row_hash
                with conn.cursor() as cursor:
                    cursor.executemany(
                        _AUDIT_INSERT,
                        [
                            (r.seq, r.time, r.tenant, r.key_id, r.model, r.model_digest, r.request_id,
                             r.decision, r.status, r.prev_hash, r.row_hash, r.prompt_tokens,
                             r.completion_tokens, r.guard)
                            for r in rows
                        ],
                    )  # fmt: skip
                conn.execute(
                    b"UPDATE airlock_audit_head SET seq = %s, row_hash = %s WHERE id = 1", (seq - 1, prev)
                )
        except BackendUnavailable as exc:
            raise AuditUnavailable(str(exc)) from exc
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            self.backend.failed(exc)
            raise AuditUnavailable(f"audit append failed: {type(exc).__name__}") from exc
        return rows

    def audit_head(self) -> AuditHead:
        rows = self._run("SELECT seq, row_hash FROM airlock_audit_head WHERE id = 1")
        seq, head = (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)
        return AuditHead(seq, head, _time.time())

    def audit_rows(self, start: int = 1) -> Iterator[AuditRow]:
        """The rows from seq ``start`` on, read in pages (a long log is never held in memory at once)."""
        after = start - 1
        while True:
            page = self._run(_AUDIT_PAGE, (after,))
            for row in page:
                seq, when, tenant, key_id, model, digest, request_id, decision, status, prev, mac, p, c, g = (
                    row
                )
                yield AuditRow(
                    int(seq), float(when), tenant, key_id, model, digest, request_id, decision, int(status),
                    prev, mac, int(p), int(c), g,
                )  # fmt: skip
            if len(page) < 1000:
                return
            after = int(page[-1][0])

    def close(self) -> None:
        self.backend.close()
        self._pool.close()
