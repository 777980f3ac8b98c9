"""The shared backends on real servers: the PostgreSQL store and the Redis limiter, as N replicas
(N store or limiter objects, each with its own connections) use them. Servers from ._servers."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import redis

from airlock.errors import UsageError
from airlock.gateway import create_key, load_config, verify_chain
from airlock.gateway._backend import BackendConfig, BackendUnavailable, redact
from airlock.gateway._config import TenantLimits
from airlock.gateway._pg_store import SCHEMA_VERSION, PostgresStore, migrate
from airlock.gateway._redis_limiter import RedisLimiter
from airlock.gateway._store import AdmissionRecord, AuditEntry, AuditUnavailable
from airlock.gateway._tls import DevCertificates, dev_certificates
from tests.ecosystem.test_cli_shell import _without
from tests.gateway._servers import PASSWORD, Postgres, Redis

pytestmark = pytest.mark.xdist_group("scale")

KEY = bytes(range(32))
_names = itertools.count()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Redis]:
    server = Redis()
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


def limiter(server: Redis, **kwargs: float) -> RedisLimiter:
    options = {"request_seconds": 30.0, "generation_seconds": 300.0, **kwargs}
    return RedisLimiter(BackendConfig(server.url, server.password_file), **options)


def up(backend: PostgresStore | RedisLimiter) -> bool:
    """Whether it is marked up now (a call, so that type checkers do not narrow it between reads)."""
    return backend.available


def tenant() -> str:
    return f"tenant-{next(_names)}-{time.monotonic_ns()}"


# PostgreSQL ------------------------------------------------------------------------------------


def test_schema_is_versioned_and_must_be_migrated(postgres: Postgres) -> None:
    config = fresh_database(postgres, migrated=False)
    with pytest.raises(UsageError, match=r"schema version 0, this airlock needs 1: run `airlock serve"):
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
    assert sorted(results) == [(0, 1), (1, 1), (1, 1), (1, 1)]


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


# Redis -----------------------------------------------------------------------------------------


def test_request_bucket_is_one_budget_for_all_replicas(redis_server: Redis) -> None:
    replicas = [limiter(redis_server) for _ in range(3)]
    name, limits = tenant(), TenantLimits(requests_per_minute=100)
    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: replicas[i % 3].take_request(name, limits, 0.0), range(300)))
    elapsed = time.monotonic() - started
    allowed = sum(r.allowed for r in results)
    assert 100 <= allowed <= 100 + int(elapsed * 100 / 60) + 1
    assert {r.budget for r in results if not r.allowed} == {"requests"}
    for replica in replicas:
        replica.close()


def test_time_is_the_servers_not_the_callers(redis_server: Redis) -> None:
    """Replicas whose clocks disagree (``now`` 0 and 10^12) share one refill: no free tokens."""
    one, two = limiter(redis_server), limiter(redis_server)
    name, limits = tenant(), TenantLimits(requests_per_minute=10)
    results = [(one if i % 2 else two).take_request(name, limits, 0.0 if i % 2 else 1e12) for i in range(12)]
    assert [r.allowed for r in results] == [True] * 10 + [False, False]
    assert 5.0 < results[-1].retry_after <= 6.0  # one token at 10 per minute
    one.close()
    two.close()


def test_byte_and_token_budgets(redis_server: Redis) -> None:
    lim = limiter(redis_server)
    name = tenant()
    limits = TenantLimits(tensor_bytes_per_minute=1000, tokens_per_minute=600)
    assert not lim.take_bytes(name, limits, 1001, 0.0).allowed  # all or nothing: nothing taken
    assert lim.take_bytes(name, limits, 1000, 0.0).allowed
    refused = lim.take_bytes(name, limits, 500, 0.0)
    assert not refused.allowed and refused.budget == "tensor_bytes" and 29 < refused.retry_after <= 30
    assert lim.take_tokens(name, limits, 600, 0.0).allowed
    assert not lim.take_tokens(name, limits, 300, 0.0).allowed
    lim.settle_tokens(name, limits, -400, 0.0)  # 400 reserved but unused come back
    assert lim.take_tokens(name, limits, 390, 0.0).allowed
    lim.settle_tokens(name, limits, 600, 0.0)  # used 600 more than reserved: the bucket owes
    owed = lim.take_tokens(name, limits, 1, 0.0)
    assert not owed.allowed and owed.budget == "tokens" and 55 < owed.retry_after <= 61
    lim.settle_tokens(name, limits, -10_000, 0.0)  # a refund never fills beyond one minute's budget
    assert (
        lim.take_tokens(name, limits, 600, 0.0).allowed and not lim.take_tokens(name, limits, 5, 0.0).allowed
    )
    lim.close()


def test_in_flight_caps_are_shared_and_abandoned_slots_expire(redis_server: Redis) -> None:
    name, limits = tenant(), TenantLimits(max_concurrent=2, max_generations=1)
    a, b = limiter(redis_server), limiter(redis_server)
    assert a.enter(name, limits) and b.enter(name, limits) and not a.enter(name, limits)
    b.leave(name)
    assert a.enter(name, limits) and not b.enter(name, limits)
    assert a.enter_generation(name, limits) and not b.enter_generation(name, limits)
    a.leave_generation(name)
    assert b.enter_generation(name, limits)
    # a replica that dies mid-request never leaves: its tickets expire at their deadline
    dying = limiter(redis_server, request_seconds=0.3, generation_seconds=0.3, ticket_margin=0.0)
    other = tenant()
    assert dying.enter(other, limits) and dying.enter(other, limits) and not a.enter(other, limits)
    client = redis.Redis.from_url(redis_server.url, password=PASSWORD)
    assert 0 < client.pttl(f"airlock:{other}:in_flight") <= 300
    time.sleep(0.5)
    assert a.enter(other, limits) and a.enter(other, limits) and not b.enter(other, limits)
    client.close()
    for lim in (a, b, dying):
        lim.close()


def test_buckets_expire_once_they_would_be_full(redis_server: Redis) -> None:
    lim = limiter(redis_server)
    name, limits = tenant(), TenantLimits(requests_per_minute=60)
    lim.take_request(name, limits, 0.0)
    client = redis.Redis.from_url(redis_server.url, password=PASSWORD)
    # one token owed at one per second: the key outlives that by at most a second, never forever
    assert 1000 <= client.pttl(f"airlock:{name}:requests") <= 2000
    assert set(client.keys(f"airlock:{name}:*")) == {f"airlock:{name}:requests".encode()}
    client.close()
    lim.close()


def test_namespaces_keep_deployments_apart(redis_server: Redis) -> None:
    name, limits = tenant(), TenantLimits(requests_per_minute=1)
    first, second = (
        RedisLimiter(BackendConfig(redis_server.url, redis_server.password_file, namespace=ns),
                     request_seconds=1, generation_seconds=1)
        for ns in ("prod", "staging")
    )  # fmt: skip
    assert first.take_request(name, limits, 0.0).allowed and not first.take_request(name, limits, 0.0).allowed
    assert second.take_request(name, limits, 0.0).allowed  # its own bucket
    first.close()
    second.close()


def test_redis_down_fails_closed_then_recovers_by_itself() -> None:
    server = Redis()
    try:
        lim = limiter(server)
        name, limits = tenant(), TenantLimits(requests_per_minute=1000)
        assert lim.take_request(name, limits, 0.0).allowed and lim.enter(name, limits)
        server.kill()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            lim.take_request(name, limits, 0.0)
        with pytest.raises(BackendUnavailable):
            lim.enter(name, limits)
        with pytest.raises(BackendUnavailable):
            lim.take_tokens(name, limits, 1, 0.0)
        lim.leave(name)  # never raises: the ticket expires by itself
        assert time.monotonic() - started < 3.0 and not up(lim)
        server.start()  # empty: the scripts are loaded again on first use (EVALSHA, NOSCRIPT)
        end = time.monotonic() + 20
        while not up(lim) and time.monotonic() < end:
            time.sleep(0.1)
        assert up(lim) and lim.take_request(name, limits, 0.0).allowed and lim.enter(name, limits)
        lim.close()
    finally:
        server.close()


def test_wrong_password_is_refused_at_start(redis_server: Redis, tmp_path: Path) -> None:
    wrong = tmp_path / "pw"
    wrong.write_text("not-it\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
        RedisLimiter(BackendConfig(redis_server.url, wrong), request_seconds=1, generation_seconds=1)


# TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevCertificates, DevCertificates]:
    """The servers' CA and certificate for 127.0.0.1, and another CA that signed nothing of theirs."""
    folder = tmp_path_factory.mktemp("certs")
    return dev_certificates(folder / "real", ["127.0.0.1"]), dev_certificates(folder / "other", ["127.0.0.1"])


def test_redis_over_tls(certificates: tuple[DevCertificates, DevCertificates]) -> None:
    real, other = certificates
    server = Redis(tls=(real.server_cert, real.server_key))
    try:
        assert server.url.startswith("rediss://")
        lim = RedisLimiter(
            BackendConfig(server.url, server.password_file, real.ca_cert),
            request_seconds=1,
            generation_seconds=1,
        )
        assert lim.take_request(tenant(), TenantLimits(), 0.0).allowed
        lim.close()
        for url, ca in [(server.url, other.ca_cert), (server.url.replace("rediss", "redis"), None)]:
            with pytest.raises(UsageError, match="cannot reach Redis"):  # unknown CA; plaintext to TLS
                RedisLimiter(
                    BackendConfig(url, server.password_file, ca), request_seconds=1, generation_seconds=1
                )
    finally:
        server.close()


def test_postgres_over_verified_tls(certificates: tuple[DevCertificates, DevCertificates]) -> None:
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
    finally:
        server.close()


# configuration ---------------------------------------------------------------------------------


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(f'[server]\nstate = "s.db"\n{text}', encoding="utf-8")
    return path


def test_backend_config(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, '[state]\nurl = "postgresql://u@db:5432/air"\n'
                                           'password_file = "pg.pw"\nsslmode = "verify-full"\nca_file = "/ca.pem"\n'
                                           '[limits]\nurl = "rediss://cache:6380/0"\ntimeout_seconds = 0.5\n'))  # fmt: skip
    assert config.state_backend == BackendConfig(
        "postgresql://u@db:5432/air", tmp_path / "pg.pw", Path("/ca.pem"), "verify-full", 2.0, 5.0
    )
    assert config.limits_backend is not None and config.limits_backend.timeout_seconds == 0.5
    assert load_config(_config(tmp_path, "")).state_backend is None  # SQLite, in process: the default
    for text, message in [
        (
            '[state]\nurl = "postgresql://u:hunter2@db/air"\n',
            r"holds a password \(postgresql://u:\*\*\*@db/air\)",
        ),
        ('[limits]\nurl = "redis://:hunter2@cache"\n', "put it in limits.password_file"),
        ('[state]\nurl = "redis://cache"\n', "state.url must start with postgres or postgresql://"),
        ('[limits]\nurl = "postgresql://db"\n', "limits.url must start with redis or rediss://"),
        ('[limits]\nurl = "redis://cache"\nsslmode = "require"\n', r"\[state\] only"),
        ('[state]\nurl = "postgresql://db"\nsslmode = "sometimes"\n', "sslmode must be one of"),
        (
            '[state]\nurl = "postgresql://db"\npasword_file = "x"\n',
            r"unknown key\(s\) in \[state\]: pasword_file",
        ),
        ('[state]\npassword_file = "x"\n', r"\[state\] needs url"),
        ('[limits]\nurl = "redis://cache"\ntimeout_seconds = 0\n', "limits.timeout_seconds must be"),
        ('[limits]\nurl = "redis://cache"\nnamespace = "a:b"\n', "limits.namespace must be"),
        ('[state]\nurl = "postgresql://db"\nnamespace = "a"\n', r"\[limits\] only"),
    ]:
        with pytest.raises(UsageError, match=message) as caught:
            load_config(_config(tmp_path, text))
        assert "hunter2" not in str(caught.value)
    assert (
        redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"
        and redact("postgresql://h/db") == "postgresql://h/db"
    )


@pytest.mark.parametrize(("table", "hidden"), [("state", "psycopg"), ("limits", "redis")])
def test_a_server_url_without_the_scale_extra_names_it(tmp_path: Path, table: str, hidden: str) -> None:
    url = "postgresql://db/air" if table == "state" else "redis://cache"
    (tmp_path / "c.toml").write_text(f'[{table}]\nurl = "{url}"\n', encoding="utf-8")
    args = ["tenant", "list", "--config", "c.toml"] if table == "state" else ["serve", "--config", "c.toml"]
    proc = _without([hidden], args, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"airlock {args[0]}: needs the 'scale' extra, not installed: pip install 'model-airlock[scale]'"
    )
