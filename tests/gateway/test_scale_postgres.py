"""The PostgreSQL store on a real server, as N replicas (N store objects, each with its own pool)
use it: migrations, shared tenants and keys, one audit chain, failing closed, TLS. Servers: ._servers."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from airlock.errors import UsageError
from airlock.gateway import create_key, load_config, verify_chain
from airlock.gateway._audit import GENESIS, chain_hash
from airlock.gateway._backend import BackendConfig, BackendUnavailable
from airlock.gateway._config import TenantLimits
from airlock.gateway._pg_store import MIGRATIONS, SCHEMA_VERSION, PostgresStore, _connect_kwargs, migrate
from airlock.gateway._store import AdmissionRecord, AuditEntry, AuditUnavailable
from airlock.gateway._tls import DevCertificates, dev_certificates
from tests.gateway._servers import PASSWORD, Postgres

pytestmark = pytest.mark.xdist_group("scale")

KEY = bytes(range(32))
_names = itertools.count()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.close()


def fresh_database(server: Postgres, *, migrated: bool = True) -> BackendConfig:
    """A database of its own for one test (the cluster is shared by the module)."""
    name = f"t{next(_names)}_{time.monotonic_ns()}"
    with psycopg.connect(server.url, password=PASSWORD, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    config = BackendConfig(server.url.rsplit("/", 1)[0] + "/" + name, server.password_file)
    if migrated:
        migrate(config)
    return config


def up(backend: PostgresStore) -> bool:
    """Whether it is marked up now (a call, so that type checkers do not narrow it between reads)."""
    return backend.available


# PostgreSQL ------------------------------------------------------------------------------------


def test_schema_is_versioned_and_must_be_migrated(postgres: Postgres) -> None:
    config = fresh_database(postgres, migrated=False)
    with pytest.raises(
        UsageError, match=f"schema version 0, this airlock needs {SCHEMA_VERSION}: run `airlock serve"
    ):
        PostgresStore(config)
    assert migrate(config) == (0, SCHEMA_VERSION)
    assert migrate(config) == (SCHEMA_VERSION, SCHEMA_VERSION)  # repeatable
    PostgresStore(config).close()
    with psycopg.connect(config.url, password=PASSWORD, autocommit=True) as conn:
        conn.execute("INSERT INTO airlock_schema VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(UsageError, match=f"schema version {SCHEMA_VERSION + 1}, this airlock needs"):
        PostgresStore(config)
    with pytest.raises(UsageError, match="newer than this airlock"):
        migrate(config)


def test_concurrent_migrations_apply_once(postgres: Postgres) -> None:
    config = fresh_database(postgres, migrated=False)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate(config), range(4)))
    last = SCHEMA_VERSION
    assert sorted(results) == [(0, last), (last, last), (last, last), (last, last)]


def test_tenants_keys_and_admissions_are_shared_by_replicas(postgres: Postgres) -> None:
    config = fresh_database(postgres)
    one, two = PostgresStore(config), PostgresStore(config)
    try:
        one.add_tenant("acme", TenantLimits(requests_per_minute=7))
        one.add_tenant("plain", None)
        with pytest.raises(UsageError, match="already exists"):
            two.add_tenant("acme", None)
        acme = two.tenant("acme")
        assert acme is not None and acme.limits == TenantLimits(requests_per_minute=7)
        assert [t.name for t in two.tenants()] == ["acme", "plain"] and two.tenant("nobody") is None
        record, _token = create_key(one, "acme", ("affine",))
        seen = two.key(record.key_id)
        assert seen is not None and seen.token_hash == record.token_hash and seen.scopes == ("affine",)
        assert seen.revoked is None and [k.key_id for k in two.keys("acme")] == [record.key_id]
        assert one.revoke_key(record.key_id, 123.0) is True
        assert one.revoke_key(record.key_id, 124.0) is False
        revoked = two.key(record.key_id)  # the other replica sees it at its very next read
        assert revoked is not None and revoked.revoked == 123.0
        admission = AdmissionRecord("m", "p", "d" * 64, "none configured", "CLEAN", "admitted", "ok",
                                    ({"rule": "r", "severity": "INFO"},), 5.0)  # fmt: skip
        one.put_admission(admission)
        one.put_admission(admission)  # replaced, not duplicated
        assert two.admission("m") == admission and two.admission("other") is None
    finally:
        one.close()
        two.close()


def _entry(i: int) -> AuditEntry:
    return AuditEntry(1e9 + i / 7, "acme", "kid", "affine", "d" * 64, f"req-{i}", "allowed", 200, i % 3, i)


def test_replicas_appending_at_once_form_one_chain(postgres: Postgres) -> None:
    """Four replicas, two threads each, 25 batches each: one chain, no fork, no gap, no failure."""
    config = fresh_database(postgres)
    stores = [PostgresStore(config, KEY) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def append(n: int) -> None:
        barrier.wait()
        for i in range(25):
            try:
                stores[n % 4].append_audit_many([_entry(n * 1000 + i * 2), _entry(n * 1000 + i * 2 + 1)])
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert errors == []
        rows = list(stores[0].audit_rows())
        assert [r.seq for r in rows] == list(range(1, 401))
        report = verify_chain(rows, KEY)
        assert report.ok and report.rows == 400
        assert stores[1].audit_head().head == report.head and stores[2].audit_head().seq == 400
        assert {r.request_id for r in rows} == {f"req-{n * 1000 + i}" for n in range(8) for i in range(50)}
    finally:
        for store in stores:
            store.close()


def test_guard_decisions_are_stored_and_chained(postgres: Postgres) -> None:
    """A guarded text model's decisions (AuditEntry.guard) are kept and MAC'd as on SQLite: version 1
    of the schema had no column for them, so PostgreSQL dropped them (read back as '', not in the
    MAC) while SQLite kept them."""
    config = fresh_database(postgres)
    store = PostgresStore(config, KEY)
    guard = '{"input":"block","rules":{"pii.email":1}}'
    try:
        plain, guarded = store.append_audit_many([_entry(1), replace(_entry(2), guard=guard)])
        assert guarded.guard == guard and plain.guard == ""
        rows = list(store.audit_rows())
        assert [r.guard for r in rows] == ["", guard] and rows == [plain, guarded]
        assert verify_chain(rows, KEY).ok
        with psycopg.connect(config.url, password=PASSWORD, autocommit=True) as conn:
            conn.execute("UPDATE airlock_audit SET guard = '' WHERE seq = 2")  # the decision erased
        report = verify_chain(store.audit_rows(), KEY)
        assert report.problems == ("row seq 2: content does not match its MAC (the row was edited)",)
    finally:
        store.close()


def test_a_version_1_database_is_migrated_and_its_chain_still_verifies(postgres: Postgres) -> None:
    """Rows written by a gateway on schema version 1 (no guard column) verify after the migration,
    and new rows chain on after them."""
    config = fresh_database(postgres, migrated=False)
    with psycopg.connect(config.url, password=PASSWORD, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "CREATE TABLE airlock_schema (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
        )
        conn.execute(MIGRATIONS[0][1].encode())
        conn.execute("INSERT INTO airlock_schema VALUES (1, 0)")
        prev = GENESIS
        for seq in (1, 2):
            entry = _entry(seq)
            fields = (entry.time, entry.tenant, entry.key_id, entry.model, entry.model_digest,
                      entry.request_id, entry.decision, entry.status)  # fmt: skip
            tokens = (entry.prompt_tokens, entry.completion_tokens)
            mac = chain_hash(KEY, prev, seq, *fields, tokens)
            conn.execute(
                "INSERT INTO airlock_audit VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (seq, *fields, prev, mac, *tokens),
            )
            prev = mac
        conn.execute("UPDATE airlock_audit_head SET seq = 2, row_hash = %s", (prev,))
    with pytest.raises(UsageError, match=f"schema version 1, this airlock needs {SCHEMA_VERSION}"):
        PostgresStore(config, KEY)
    assert migrate(config) == (1, SCHEMA_VERSION)
    store = PostgresStore(config, KEY)
    try:
        store.append_audit_many([replace(_entry(3), guard='{"output":"allow"}')])
        report = verify_chain(store.audit_rows(), KEY)
        assert report.ok and report.rows == 3 and report.head == store.audit_head().head
    finally:
        store.close()


def test_a_valid_chain_verifies_whatever_the_database_rounds_floats_to(postgres: Postgres) -> None:
    """A row's time is in its MAC (repr); PostgreSQL prints float8 with extra_float_digits more
    digits, and a database or role default of 0 (PostgreSQL 11's own default) rounded every time
    read back to 15 digits: a valid chain was reported as edited row by row."""
    config = fresh_database(postgres)
    with psycopg.connect(config.url, password=PASSWORD, autocommit=True) as conn:
        database = config.url.rsplit("/", 1)[1]
        conn.execute(f"ALTER DATABASE {database} SET extra_float_digits = 0".encode())
    store = PostgresStore(config, KEY)
    try:
        written = store.append_audit_many([_entry(i) for i in range(1, 8)])
        assert list(store.audit_rows()) == written  # 1e9 + i / 7: 17 significant digits
        assert verify_chain(store.audit_rows(), KEY).ok
    finally:
        store.close()


def test_audit_rows_are_read_in_pages_at_the_page_edge(postgres: Postgres) -> None:
    config = fresh_database(postgres)
    store = PostgresStore(config, KEY)
    try:
        for count in (999, 1, 1):  # 999, 1000 (one full page), 1001 (a second page)
            store.append_audit_many([_entry(i) for i in range(count)])
            rows = list(store.audit_rows())
            assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
            assert verify_chain(rows, KEY).ok
        assert len(rows) == 1001
    finally:
        store.close()


def test_a_replica_frozen_inside_an_append_does_not_stop_the_others(postgres: Postgres) -> None:
    """A replica that stops between the statements of an append (SIGSTOP, a paused container or VM:
    its kernel still answers keepalives) holds the head row's lock. The other replicas' appends wait
    lock_timeout and fail; before, they failed for as long as it stayed frozen (every request 503 on
    every replica). The server now ends the frozen session after the timeout and the lock is free."""
    base = fresh_database(postgres)
    config = BackendConfig(base.url, base.password_file, timeout_seconds=1.0)
    # a replica's connection (the same options), frozen right after taking the head row's lock
    frozen = psycopg.connect(config.url, **_connect_kwargs(config))
    frozen.execute("BEGIN")
    frozen.execute("SELECT seq FROM airlock_audit_head WHERE id = 1 FOR UPDATE")
    store = PostgresStore(config, KEY)
    try:
        end = time.monotonic() + 20
        while True:
            try:
                row = store.append_audit_many([_entry(1)])[0]
                break
            except AuditUnavailable:  # while it holds the lock (lock_timeout)
                assert time.monotonic() < end, "the frozen replica's lock was never freed"
                while not up(store) and time.monotonic() < end:
                    time.sleep(0.05)
        assert row.seq == 1 and verify_chain(store.audit_rows(), KEY).ok
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):  # the server ended it
            frozen.execute("SELECT 1")
    finally:
        store.close()
        frozen.close()


def test_append_without_the_key_is_refused(postgres: Postgres) -> None:
    store = PostgresStore(fresh_database(postgres))
    try:
        with pytest.raises(AuditUnavailable):
            store.append_audit_many([_entry(1)])
    finally:
        store.close()


def test_postgres_down_fails_closed_then_recovers_by_itself() -> None:
    server = Postgres()
    try:
        config = fresh_database(server)
        store = PostgresStore(config, KEY)
        store.add_tenant("acme", None)
        server.kill()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            store.tenant("acme")
        with pytest.raises(AuditUnavailable):
            store.append_audit_many([_entry(1)])
        assert time.monotonic() - started < 5.0 and not up(store)
        server.start()
        end = time.monotonic() + 30
        while not up(store) and time.monotonic() < end:
            time.sleep(0.1)
        assert up(store)
        record = store.tenant("acme")  # the pool dropped its broken connections: no restart needed
        assert record is not None and store.append_audit_many([_entry(2)])[0].seq == 1
        store.close()
    finally:
        server.close()


# TLS ---


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevCertificates, DevCertificates]:
    """The servers' CA and certificate for 127.0.0.1, and another CA that signed nothing of theirs."""
    folder = tmp_path_factory.mktemp("certs")
    return dev_certificates(folder / "real", ["127.0.0.1"]), dev_certificates(folder / "other", ["127.0.0.1"])


def test_postgres_over_verified_tls(
    certificates: tuple[DevCertificates, DevCertificates], tmp_path: Path
) -> None:
    real, other = certificates
    server = Postgres(tls=(real.server_cert, real.server_key))
    try:
        plain = fresh_database(server)
        config = BackendConfig(plain.url, plain.password_file, real.ca_cert, "verify-full")
        store = PostgresStore(config)
        rows = store._run("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert rows == [(True,)]
        store.close()
        with pytest.raises(UsageError, match="cannot reach PostgreSQL"):
            PostgresStore(BackendConfig(plain.url, plain.password_file, other.ca_cert, "verify-full"))
        # [state] ca_file without sslmode checks the server (verify-full). Before, libpq's default
        # "prefer" ignored the CA: a server whose certificate another CA signed (a man in the
        # middle) was used anyway, over plaintext
        (tmp_path / "c.toml").write_text(
            f'[server]\nstate = "s.db"\n[state]\nurl = "{plain.url}"\n'
            f'password_file = "{plain.password_file}"\nca_file = "{other.ca_cert}"\n',
            encoding="utf-8",
        )
        backend = load_config(tmp_path / "c.toml").state_backend
        assert backend is not None and backend.sslmode == "verify-full"
        with pytest.raises(UsageError, match="cannot reach PostgreSQL"):
            PostgresStore(backend).close()
    finally:
        server.close()
