"""In-process token buckets: capacity = one minute's budget, refilled continuously.

A tenant with ``requests_per_minute = 60`` may burst 60 requests, then gets one more per second.
Single event loop, so no locking is needed beyond the GIL; ``now`` is passed in (monotonic) so
tests can reason about refills exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from airlock.gateway._config import TenantLimits
from airlock.gateway._limiter import Admit

__all__ = ["MemoryLimiter"]


@dataclass
class _Bucket:
    tokens: float
    stamp: float

    def take(self, amount: float, capacity: float, per_second: float, now: float) -> float:
        """Take ``amount``; return 0.0 on success or the seconds to wait."""
        self.tokens = min(capacity, self.tokens + (now - self.stamp) * per_second)
        self.stamp = now
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / per_second


class MemoryLimiter:
    name: Final = "memory"

    def __init__(self) -> None:
        self._requests: dict[str, _Bucket] = {}
        self._bytes: dict[str, _Bucket] = {}
        self._in_flight: dict[str, int] = {}
        self._tokens: dict[str, _Bucket] = {}
        self._generations: dict[str, int] = {}

    @staticmethod
    def _bucket(table: dict[str, _Bucket], tenant: str, capacity: float, now: float) -> _Bucket:
        bucket = table.get(tenant)
        if bucket is None:
            bucket = table[tenant] = _Bucket(capacity, now)
        return bucket

    def take_request(self, tenant: str, limits: TenantLimits, now: float) -> Admit:
        capacity = float(limits.requests_per_minute)
        wait = self._bucket(self._requests, tenant, capacity, now).take(1.0, capacity, capacity / 60.0, now)
        return Admit(True) if wait == 0.0 else Admit(False, wait, "requests")

    def take_bytes(self, tenant: str, limits: TenantLimits, nbytes: int, now: float) -> Admit:
        capacity = float(limits.tensor_bytes_per_minute)
        wait = self._bucket(self._bytes, tenant, capacity, now).take(
            float(nbytes), capacity, capacity / 60.0, now
        )
        return Admit(True) if wait == 0.0 else Admit(False, wait, "tensor_bytes")

    def enter(self, tenant: str, limits: TenantLimits) -> bool:
        current = self._in_flight.get(tenant, 0)
        if current >= limits.max_concurrent:
            return False
        self._in_flight[tenant] = current + 1
        return True

    def leave(self, tenant: str) -> None:
        self._in_flight[tenant] = max(0, self._in_flight.get(tenant, 0) - 1)

    def take_tokens(self, tenant: str, limits: TenantLimits, tokens: int, now: float) -> Admit:
        capacity = float(limits.tokens_per_minute)
        wait = self._bucket(self._tokens, tenant, capacity, now).take(
            float(tokens), capacity, capacity / 60.0, now
        )
        return Admit(True) if wait == 0.0 else Admit(False, wait, "tokens")

    def settle_tokens(self, tenant: str, limits: TenantLimits, delta: int, now: float) -> None:
        capacity = float(limits.tokens_per_minute)
        bucket = self._bucket(self._tokens, tenant, capacity, now)
        bucket.take(0.0, capacity, capacity / 60.0, now)  # refill up to now
        bucket.tokens = min(capacity, bucket.tokens - delta)

    def enter_generation(self, tenant: str, limits: TenantLimits) -> bool:
        current = self._generations.get(tenant, 0)
        if current >= limits.max_generations:
            return False
        self._generations[tenant] = current + 1
        return True

    def leave_generation(self, tenant: str) -> None:
        self._generations[tenant] = max(0, self._generations.get(tenant, 0) - 1)
