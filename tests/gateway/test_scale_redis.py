"""The Redis limiter on a real server, as N replicas (N limiter objects) use it: one budget, the
server's clock, in-flight tickets that expire, failing closed, TLS. Servers: ._servers."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from airlock.errors import UsageError
from airlock.gateway._backend import BackendConfig, BackendUnavailable
from airlock.gateway._config import TenantLimits
from airlock.gateway._redis_limiter import RedisLimiter
from airlock.gateway._tls import DevCertificates, dev_certificates
from tests.gateway._servers import PASSWORD, Redis, pause

pytestmark = pytest.mark.xdist_group("scale")

_names = itertools.count()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Redis]:
    server = Redis()
    yield server
    server.close()


def limiter(server: Redis, **kwargs: float) -> RedisLimiter:
    options = {"request_seconds": 30.0, "generation_seconds": 300.0, **kwargs}
    return RedisLimiter(BackendConfig(server.url, server.password_file), **options)


def up(backend: RedisLimiter) -> bool:
    """Whether it is marked up now (a call, so that type checkers do not narrow it between reads)."""
    return backend.available


def tenant() -> str:
    return f"tenant-{next(_names)}-{time.monotonic_ns()}"


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


def test_slots_given_back_while_redis_hangs_are_freed_when_it_answers() -> None:
    """A request that ends while Redis does not answer cannot remove its in-flight ticket. It was
    left to expire at its deadline plus the margin (here 30 + 60 s): after a one-second blip the
    tenant ran with fewer slots (none, at its cap) for a minute and a half. Now it is removed as
    soon as the watch reaches Redis again."""
    server = Redis()
    try:
        config = BackendConfig(server.url, server.password_file, connect_timeout_seconds=0.5,
                               timeout_seconds=0.5)  # fmt: skip
        lim = RedisLimiter(config, request_seconds=30.0, generation_seconds=30.0)
        name, limits = tenant(), TenantLimits(max_concurrent=1, max_generations=1)
        assert lim.enter(name, limits) and lim.enter_generation(name, limits)
        pause(server.process, True)  # holds its sockets, answers nothing
        try:
            with pytest.raises(BackendUnavailable):
                lim.take_request(name, limits, 0.0)
            assert not up(lim)
            lim.leave_generation(name)  # never raises, never waits
            lim.leave(name)
        finally:
            pause(server.process, False)
        end = time.monotonic() + 20
        while not up(lim) and time.monotonic() < end:
            time.sleep(0.05)
        assert up(lim)
        assert lim.enter(name, limits) and lim.enter_generation(name, limits)  # free at once
        assert not lim.enter(name, limits) and not lim.enter_generation(name, limits)  # cap still 1
        lim.close()
    finally:
        server.close()


def test_wrong_password_is_refused_at_start(redis_server: Redis, tmp_path: Path) -> None:
    wrong = tmp_path / "pw"
    wrong.write_text("not-it\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
        RedisLimiter(BackendConfig(redis_server.url, wrong), request_seconds=1, generation_seconds=1)


# TLS ---


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


def test_redis_tls_checks_the_host_name(tmp_path: Path) -> None:
    """rediss:// checks that the certificate names the host (set explicitly: redis-py before 6.0,
    which pyproject allows, did not by default: a certificate the CA signed for another name passed)."""
    named = dev_certificates(tmp_path / "named", ["localhost"])  # valid, but not for 127.0.0.1
    server = Redis(tls=(named.server_cert, named.server_key))
    try:
        with pytest.raises(UsageError, match="cannot reach Redis"):
            RedisLimiter(BackendConfig(server.url, server.password_file, named.ca_cert),
                         request_seconds=1, generation_seconds=1)  # fmt: skip
        by_name = server.url.replace("127.0.0.1", "localhost")
        lim = RedisLimiter(BackendConfig(by_name, server.password_file, named.ca_cert),
                           request_seconds=1, generation_seconds=1)  # fmt: skip
        assert lim.take_request(tenant(), TenantLimits(), 0.0).allowed
        lim.close()
    finally:
        server.close()
