"""The embedded default state: one SQLite file (standard library), WAL mode.

One connection guarded by a lock serves the reads and the records; other processes (``airlock key
revoke`` while the gateway runs) share the file through SQLite's own locking, so a revocation is
seen by the very next request. Audit appends run on a second connection of their own (its own
lock), in ``BEGIN IMMEDIATE`` so concurrent writers serialise and the chain never forks: an append
that waits for another process's write lock (up to the busy timeout, in the gateway's audit writer
thread) never holds up the reads the event loop makes (WAL readers do not wait for a writer). While
it serves, the gateway bounds the wait of those reads (:meth:`SqliteStore.bound_reads`): a lock
they would have to wait for (another process in exclusive locking mode, a recovery) refuses the
request with :class:`._backend.BackendUnavailable` after a fraction of a second instead of
stalling the loop for the busy timeout.

Key and tenant records read by every request are kept in memory, but only as long as
``PRAGMA data_version`` (which changes when any other connection commits to the file) and this
store's own writes say nothing changed: each read still asks SQLite that one cheap question, so a
revocation by another process is seen by the very next request, as before. Only records that
exist are kept (a caller naming unknown key ids cannot grow the cache); their number is bounded by
the keys an operator created.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time as _time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from airlock.errors import UsageError
from airlock.gateway._audit import GENESIS, AuditHead, chain_hash
from airlock.gateway._backend import BackendUnavailable
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

__all__ = ["SqliteStore"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY, created REAL NOT NULL,
    requests_per_minute INTEGER, tensor_bytes_per_minute INTEGER, max_concurrent INTEGER,
    tokens_per_minute INTEGER, max_generations INTEGER
);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(name),
    token_hash BLOB NOT NULL, scopes TEXT NOT NULL, created REAL NOT NULL, revoked REAL
);
CREATE TABLE IF NOT EXISTS admissions (
    model TEXT PRIMARY KEY, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, time REAL NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL,
    model TEXT NOT NULL, model_digest TEXT NOT NULL, request_id TEXT NOT NULL,
    decision TEXT NOT NULL, status INTEGER NOT NULL, prev_hash TEXT NOT NULL, row_hash TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    guard TEXT NOT NULL DEFAULT ''
);
"""


#: columns added after the first release: (table, column, type); added to an older file on open
_ADDED: Final = (
    ("tenants", "tokens_per_minute", "INTEGER"),
    ("tenants", "max_generations", "INTEGER"),
    ("audit", "prompt_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("audit", "completion_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("audit", "guard", "TEXT NOT NULL DEFAULT ''"),
)


def _add_columns(db: sqlite3.Connection) -> None:
    """Bring a state file written by an older airlock up to the current schema (columns only)."""
    for table, column, kind in _ADDED:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


#: how long a statement waits for another connection's lock (SQLite's busy timeout)
_BUSY_SECONDS: Final = 10.0


@contextlib.contextmanager
def _busy() -> Iterator[None]:
    """A read that could not get its lock in time: the state is unavailable (503), not a 500."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise BackendUnavailable(f"state database unavailable: {exc}") from exc


class SqliteStore:
    name: Final = "sqlite"

    def __init__(self, path: Path, audit_key: bytes | None = None) -> None:
        self._audit_key = audit_key
        self._path = path
        try:
            self._db = sqlite3.connect(
                path, timeout=_BUSY_SECONDS, isolation_level=None, check_same_thread=False
            )
            self._db.executescript(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
            )
            self._db.executescript(_SCHEMA)
            _add_columns(self._db)
        except sqlite3.Error as exc:
            raise UsageError(f"state: cannot open SQLite database {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._keys: dict[str, KeyRecord] = {}
        self._tenants: dict[str, TenantRecord] = {}
        self._version: int | None = None
        #: the audit appends' own connection (opened at the first append) and lock
        self._audit_db: sqlite3.Connection | None = None
        self._audit_lock = threading.Lock()

    def bound_reads(self, seconds: float) -> None:
        """Wait at most ``seconds`` for a lock on the reads and records connection (the gateway
        calls it before it serves: those reads run on its event loop)."""
        with self._lock:
            self._db.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")

    def _current(self) -> None:
        """Forget cached records when another connection committed since the last look (lock held)."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._keys.clear()
            self._tenants.clear()
            self._version = version

    def _forget(self) -> None:
        """After this connection wrote tenants or keys (data_version does not see its own commits)."""
        self._keys.clear()
        self._tenants.clear()

    # tenants ---------------------------------------------------------------------------------

    def add_tenant(self, name: str, limits: TenantLimits | None) -> TenantRecord:
        record = TenantRecord(name, _time.time(), limits)
        values = tuple(getattr(limits, f) if limits else None for f in LIMIT_FIELDS)
        with self._lock:
            self._forget()
            try:
                self._db.execute(
                    "INSERT INTO tenants (name, created, requests_per_minute, tensor_bytes_per_minute, "
                    "max_concurrent, tokens_per_minute, max_generations) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, record.created, *values),
                )
            except sqlite3.IntegrityError as exc:
                raise UsageError(f"tenant {name!r} already exists") from exc
        return record

    def tenant(self, name: str) -> TenantRecord | None:
        with self._lock, _busy():
            self._current()
            record = self._tenants.get(name)
            if record is not None:
                return record
            row = self._db.execute("SELECT * FROM tenants WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            record = self._tenants[name] = tenant_row(row)
            return record

    def tenants(self) -> list[TenantRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM tenants ORDER BY name").fetchall()
        return [tenant_row(row) for row in rows]

    # keys ------------------------------------------------------------------------------------

    def add_key(self, record: KeyRecord) -> None:
        with self._lock:
            self._forget()
            self._db.execute(
                "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?)",
                (record.key_id, record.tenant, record.token_hash, json.dumps(list(record.scopes)),
                 record.created, record.revoked),
            )  # fmt: skip

    @staticmethod
    def _key(row: tuple[str, str, bytes, str, float, float | None]) -> KeyRecord:
        key_id, tenant, token_hash, scopes, created, revoked = row
        return KeyRecord(key_id, tenant, bytes(token_hash), tuple(json.loads(scopes)), created, revoked)

    def key(self, key_id: str) -> KeyRecord | None:
        with self._lock, _busy():
            self._current()
            record = self._keys.get(key_id)
            if record is not None:
                return record
            row = self._db.execute("SELECT * FROM keys WHERE key_id = ?", (key_id,)).fetchone()
            if row is None:
                return None
            record = self._keys[key_id] = self._key(row)
            return record

    def keys(self, tenant: str | None) -> list[KeyRecord]:
        with self._lock:
            if tenant is None:
                rows = self._db.execute("SELECT * FROM keys ORDER BY created").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM keys WHERE tenant = ? ORDER BY created", (tenant,)
                ).fetchall()
        return [self._key(row) for row in rows]

    def revoke_key(self, key_id: str, when: float) -> bool:
        with self._lock:
            self._forget()
            cursor = self._db.execute(
                "UPDATE keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL", (when, key_id)
            )
        return cursor.rowcount == 1

    # admissions ------------------------------------------------------------------------------

    def put_admission(self, record: AdmissionRecord) -> None:
        data = {
            "model": record.model, "path": record.path, "digest": record.digest,
            "integrity": record.integrity, "verdict": record.verdict, "decision": record.decision,
            "reason": record.reason, "findings": list(record.findings), "time": record.time,
        }  # fmt: skip
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO admissions VALUES (?, ?)", (record.model, json.dumps(data))
            )

    def admission(self, model: str) -> AdmissionRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM admissions WHERE model = ?", (model,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        return AdmissionRecord(
            data["model"], data["path"], data["digest"], data["integrity"], data["verdict"],
            data["decision"], data["reason"], tuple(data["findings"]), data["time"],
        )  # fmt: skip

    # audit -----------------------------------------------------------------------------------

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
        entry = AuditEntry(time, tenant, key_id, model, model_digest, request_id, decision, status)
        return self.append_audit_many([entry])[0]

    def append_audit_many(self, entries: list[AuditEntry]) -> list[AuditRow]:
        if self._audit_key is None:
            raise AuditUnavailable("the store was opened without the audit key")
        key = self._audit_key
        rows: list[AuditRow] = []
        with self._audit_lock:
            try:
                db = self._audit_connection()
                db.execute("BEGIN IMMEDIATE")
                try:
                    last = db.execute("SELECT seq, row_hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
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
                    db.executemany(
                        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (r.seq, r.time, r.tenant, r.key_id, r.model, r.model_digest, r.request_id,
                             r.decision, r.status, r.prev_hash, r.row_hash, r.prompt_tokens,
                             r.completion_tokens, r.guard)
                            for r in rows
                        ],
                    )  # fmt: skip
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                # a full disk (SQLITE_FULL), a write the OS refuses (EFBIG, EIO -> SQLITE_IOERR) or a
                # locked database: the caller refuses service rather than serve unaudited
                raise AuditUnavailable(f"audit append failed: {exc}") from exc
        return rows

    def _audit_connection(self) -> sqlite3.Connection:
        """The appends' connection (audit lock held); opened once, on the first append."""
        if self._audit_db is None:
            self._audit_db = sqlite3.connect(
                self._path, timeout=_BUSY_SECONDS, isolation_level=None, check_same_thread=False
            )
            self._audit_db.execute("PRAGMA synchronous=NORMAL")
        return self._audit_db

    def sync_audit(self) -> None:
        """Make the committed rows durable (before a head naming them is recorded): in WAL mode with
        ``synchronous=NORMAL`` a commit is not synced, a checkpoint syncs the WAL first. PASSIVE:
        never waits for a lock (a busy checkpoint still synced what it could)."""
        with self._audit_lock:
            db = self._audit_connection()
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def audit_head(self) -> AuditHead:
        with self._lock:
            last = self._db.execute("SELECT seq, row_hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return AuditHead(last[0], last[1], _time.time()) if last else AuditHead(0, GENESIS, _time.time())

    def audit_rows(self, start: int = 1) -> Iterator[AuditRow]:
        """The rows from seq ``start`` on, in pages (a long log is never held in memory at once)."""
        after = start - 1
        while True:
            with self._lock:
                page = self._db.execute(
                    "SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT 1000", (after,)
                ).fetchall()
            for row in page:
                yield AuditRow(*row)
            if len(page) < 1000:
                return
            after = int(page[-1][0])

    def close(self) -> None:
        with self._audit_lock:
            if self._audit_db is not None:
                self._audit_db.close()
        with self._lock:
            self._db.close()
