"""The per-tenant budgets on their own: the in-process token buckets (requests, tensor bytes) and the
concurrency cap, at N-1, N and N+1, with exact refill arithmetic (``now`` is passed in, so every
refill and every Retry-After is an exact number, not a timing guess).

A bucket holds one minute's budget and refills continuously: ``requests_per_minute = 60`` is a burst
of 60, then one request per second.
"""

from __future__ import annotations

import pytest

from airlock.gateway._config import TenantLimits
from airlock.gateway._limiter import Admit, RateLimiter
from airlock.gateway._memory_limiter import MemoryLimiter

#: 60 requests per minute = 1 per second; 600 bytes per minute = 10 per second: exact in binary floats
LIMITS = TenantLimits(requests_per_minute=60, tensor_bytes_per_minute=600, max_concurrent=2)


def _drain(limiter: MemoryLimiter, tenant: str = "a", now: float = 0.0, n: int = 60) -> None:
    for i in range(n):
        assert limiter.take_request(tenant, LIMITS, now) == Admit(True), i


def test_an_allowed_admit_has_no_wait_and_no_budget() -> None:
    # field by field: Admit(True) == Admit(True, 0.0, "") would hold with any defaults
    admit = Admit(True)
    assert (admit.allowed, admit.retry_after, admit.budget) == (True, 0.0, "")


def test_the_memory_limiter_is_a_rate_limiter() -> None:
    limiter: RateLimiter = MemoryLimiter()
    admit = limiter.take_request("a", LIMITS, 0.0)
    assert (admit.allowed, admit.retry_after, admit.budget) == (True, 0.0, "")
    admit = limiter.take_bytes("a", LIMITS, 1, 0.0)
    assert (admit.allowed, admit.retry_after, admit.budget) == (True, 0.0, "")


@pytest.mark.parametrize("n, last_allowed", [(59, True), (60, True), (61, False)])
def test_request_burst_at_n_minus_1_n_n_plus_1(n: int, last_allowed: bool) -> None:
    limiter = MemoryLimiter()
    _drain(limiter, n=n - 1)
    last = limiter.take_request("a", LIMITS, 0.0)
    if last_allowed:
        assert last == Admit(True, 0.0, "")
    else:
        assert last == Admit(False, 1.0, "requests")


def test_refill_is_continuous_and_exact() -> None:
    limiter = MemoryLimiter()
    _drain(limiter)
    # a quarter of a token after 0.25 s: refused, 0.75 s to wait
    assert limiter.take_request("a", LIMITS, 0.25) == Admit(False, 0.75, "requests")
    # the refusal took nothing; the clock moved on: half a token at 0.5 s
    assert limiter.take_request("a", LIMITS, 0.5) == Admit(False, 0.5, "requests")
    # exactly one token at 1.0 s: allowed (>=, not >), and it is spent
    assert limiter.take_request("a", LIMITS, 1.0) == Admit(True)
    assert limiter.take_request("a", LIMITS, 1.0) == Admit(False, 1.0, "requests")
    # another whole second: one more, not two
    assert limiter.take_request("a", LIMITS, 2.0) == Admit(True)
    assert limiter.take_request("a", LIMITS, 2.0) == Admit(False, 1.0, "requests")


def test_refill_rate_follows_the_per_minute_budget() -> None:
    limiter = MemoryLimiter()
    limits = TenantLimits(requests_per_minute=120, tensor_bytes_per_minute=600, max_concurrent=2)
    for _ in range(120):
        assert limiter.take_request("a", limits, 0.0).allowed
    assert limiter.take_request("a", limits, 0.0) == Admit(False, 0.5, "requests")  # 2 per second
    assert limiter.take_request("a", limits, 0.5) == Admit(True)


def test_refill_is_capped_at_one_minutes_budget() -> None:
    limiter = MemoryLimiter()
    assert limiter.take_request("a", LIMITS, 0.0).allowed
    # an hour idle refills to the burst (60), never to 3600
    _drain(limiter, now=3600.0, n=60)
    assert limiter.take_request("a", LIMITS, 3600.0) == Admit(False, 1.0, "requests")


def test_a_new_bucket_starts_full_at_its_first_use() -> None:
    limiter = MemoryLimiter()
    # first seen at t=100: full (60), not 60 + 100 s of refill, nor empty
    _drain(limiter, now=100.0, n=60)
    assert limiter.take_request("a", LIMITS, 100.0) == Admit(False, 1.0, "requests")


def test_tenants_and_budgets_have_separate_buckets() -> None:
    limiter = MemoryLimiter()
    _drain(limiter, "a")
    assert limiter.take_request("a", LIMITS, 0.0).allowed is False
    _drain(limiter, "b")  # b is untouched by a
    # the byte bucket is separate from the request bucket
    assert limiter.take_bytes("a", LIMITS, 600, 0.0) == Admit(True)
    assert limiter.take_bytes("b", LIMITS, 600, 0.0) == Admit(True)


@pytest.mark.parametrize("nbytes, allowed", [(599, True), (600, True), (601, False)])
def test_byte_budget_at_n_minus_1_n_n_plus_1(nbytes: int, allowed: bool) -> None:
    limiter = MemoryLimiter()
    got = limiter.take_bytes("a", LIMITS, nbytes, 0.0)
    if allowed:
        assert got == Admit(True, 0.0, "")
    else:
        # more than a whole minute's budget: 1 byte short, 0.1 s at 10 bytes per second
        assert got == Admit(False, pytest.approx(0.1), "tensor_bytes")  # type: ignore[arg-type]
        assert got.retry_after == pytest.approx(0.1)


def test_bytes_are_taken_all_or_nothing() -> None:
    limiter = MemoryLimiter()
    assert limiter.take_bytes("a", LIMITS, 500, 0.0).allowed  # 100 left
    short = limiter.take_bytes("a", LIMITS, 101, 0.0)
    assert (short.allowed, short.budget) == (False, "tensor_bytes")
    assert short.retry_after == pytest.approx(0.1)  # 1 byte at 10 per second
    assert limiter.take_bytes("a", LIMITS, 100, 0.0) == Admit(True)  # the refusal took nothing
    assert limiter.take_bytes("a", LIMITS, 1, 0.0).allowed is False
    # 10 bytes per second: 50 bytes after 5 s, not 51
    assert limiter.take_bytes("a", LIMITS, 50, 5.0) == Admit(True)
    assert limiter.take_bytes("a", LIMITS, 1, 5.0).allowed is False


def test_zero_bytes_always_pass() -> None:
    limiter = MemoryLimiter()
    assert limiter.take_bytes("a", LIMITS, 600, 0.0).allowed
    assert limiter.take_bytes("a", LIMITS, 0, 0.0) == Admit(True)


def test_concurrency_cap_at_n_minus_1_n_n_plus_1() -> None:
    limiter = MemoryLimiter()
    assert limiter.enter("a", LIMITS)  # 1 of 2
    assert limiter.enter("a", LIMITS)  # 2 of 2
    assert not limiter.enter("a", LIMITS)  # 3: refused, and not counted
    assert not limiter.enter("a", LIMITS)
    limiter.leave("a")
    assert limiter.enter("a", LIMITS)  # one slot came back, exactly one
    assert not limiter.enter("a", LIMITS)
    assert limiter.enter("b", LIMITS)  # per tenant


def test_leave_never_counts_below_zero() -> None:
    limiter = MemoryLimiter()
    one = TenantLimits(requests_per_minute=60, tensor_bytes_per_minute=600, max_concurrent=1)
    limiter.leave("a")  # never entered
    limiter.leave("a")
    assert limiter.enter("a", one)
    assert not limiter.enter("a", one)
    limiter.leave("a")
    limiter.leave("a")  # one leave too many: still zero, not -1
    assert limiter.enter("a", one)
    assert not limiter.enter("a", one)


# -- text models: tokens per minute and generations running --------------------------------------

#: 60 tokens a minute: exactly one a second
TOKENS = TenantLimits(tokens_per_minute=60, max_generations=2)


def test_tokens_burst_at_n_minus_1_n_n_plus_1() -> None:
    for n, allowed in ((59, True), (60, True), (61, False)):
        admit = MemoryLimiter().take_tokens("a", TOKENS, n, 0.0)
        assert admit == (Admit(True) if allowed else Admit(False, 1.0, "tokens")), n


def test_settling_refunds_unused_tokens_but_never_above_a_minute() -> None:
    limiter = MemoryLimiter()
    assert limiter.take_tokens("a", TOKENS, 50, 0.0).allowed
    limiter.settle_tokens("a", TOKENS, -40, 0.0)  # used 10 of the 50 reserved
    assert limiter.take_tokens("a", TOKENS, 50, 0.0).allowed  # 50 left
    assert limiter.take_tokens("a", TOKENS, 1, 0.0) == Admit(False, 1.0, "tokens")
    limiter.settle_tokens("a", TOKENS, -1000, 0.0)  # a lying refund: capped at one minute's budget
    assert limiter.take_tokens("a", TOKENS, 60, 0.0).allowed
    assert limiter.take_tokens("a", TOKENS, 1, 0.0).allowed is False


def test_settling_a_longer_prompt_puts_the_bucket_in_debt() -> None:
    limiter = MemoryLimiter()
    assert limiter.take_tokens("a", TOKENS, 60, 0.0).allowed
    limiter.settle_tokens("a", TOKENS, 30, 0.0)  # 30 more than reserved: 30 tokens of debt
    assert limiter.take_tokens("a", TOKENS, 1, 0.0) == Admit(False, 31.0, "tokens")
    assert limiter.take_tokens("a", TOKENS, 1, 31.0) == Admit(True)


def test_generations_cap_at_n_minus_1_n_n_plus_1() -> None:
    limiter = MemoryLimiter()
    assert limiter.enter_generation("a", TOKENS) and limiter.enter_generation("a", TOKENS)
    assert not limiter.enter_generation("a", TOKENS)
    assert limiter.enter_generation("b", TOKENS)  # per tenant
    limiter.leave_generation("a")
    assert limiter.enter_generation("a", TOKENS)


def test_settling_refills_up_to_now_first() -> None:
    limiter = MemoryLimiter()
    assert limiter.take_tokens("a", TOKENS, 60, 0.0).allowed
    limiter.settle_tokens("a", TOKENS, 0, 10.0)  # nothing to settle: 10 s of refill is 10 tokens
    assert limiter.take_tokens("a", TOKENS, 11, 10.0) == Admit(False, 1.0, "tokens")
    assert limiter.take_tokens("a", TOKENS, 10, 10.0) == Admit(True)


def test_settling_a_tenant_without_a_bucket_starts_from_a_full_one() -> None:
    limiter = MemoryLimiter()
    limiter.settle_tokens("fresh", TOKENS, 20, 5.0)  # a debt before any reservation (a restart, say)
    assert limiter.take_tokens("fresh", TOKENS, 40, 5.0) == Admit(True)
    assert limiter.take_tokens("fresh", TOKENS, 1, 5.0) == Admit(False, 1.0, "tokens")


def test_leaving_generations_counts_down_exactly_and_never_below_zero() -> None:
    limiter = MemoryLimiter()
    limiter.leave_generation("a")  # a leave without an enter (never happens; must not break the count)
    assert limiter.enter_generation("a", TOKENS) and limiter.enter_generation("a", TOKENS)
    limiter.leave_generation("a")  # one of two left: one more fits, not two
    assert limiter.enter_generation("a", TOKENS)
    assert not limiter.enter_generation("a", TOKENS)
    for _ in range(3):
        limiter.leave_generation("a")  # down to 0, not below
    assert limiter.enter_generation("a", TOKENS) and limiter.enter_generation("a", TOKENS)
    assert not limiter.enter_generation("a", TOKENS)
