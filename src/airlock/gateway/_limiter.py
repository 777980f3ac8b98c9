"""The rate-limit interface: per-tenant token buckets (requests, tensor bytes, text tokens) and
concurrency caps (requests in flight, text generations running).

:mod:`._memory_limiter` keeps buckets in process (one gateway). A Redis implementation of the same
protocol lets replicas share one budget per tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from airlock.gateway._config import TenantLimits

__all__ = ["Admit", "RateLimiter"]


@dataclass(frozen=True)
class Admit:
    allowed: bool
    #: seconds until the request could succeed (for Retry-After); 0 when allowed
    retry_after: float = 0.0
    #: which budget refused: "requests", "tensor_bytes", "tokens", "concurrency", "generations",
    #: or "" when allowed
    budget: str = ""


class RateLimiter(Protocol):
    def take_request(self, tenant: str, limits: TenantLimits, now: float) -> Admit:
        """Take one request token, or say how long until one is available."""
        ...

    def take_bytes(self, tenant: str, limits: TenantLimits, nbytes: int, now: float) -> Admit:
        """Take ``nbytes`` tensor-byte tokens (all or nothing)."""
        ...

    def enter(self, tenant: str, limits: TenantLimits) -> bool:
        """Count one request in flight; False (and nothing counted) at the tenant's cap."""
        ...

    def leave(self, tenant: str) -> None: ...

    def take_tokens(self, tenant: str, limits: TenantLimits, tokens: int, now: float) -> Admit:
        """Reserve ``tokens`` text tokens before a generation (all or nothing)."""
        ...

    def settle_tokens(self, tenant: str, limits: TenantLimits, delta: int, now: float) -> None:
        """After a generation: charge ``delta`` more tokens than were reserved (the bucket may go
        into debt), or give ``-delta`` back (never above one minute's budget)."""
        ...

    def enter_generation(self, tenant: str, limits: TenantLimits) -> bool:
        """Count one generation running; False (and nothing counted) at the tenant's cap."""
        ...

    def leave_generation(self, tenant: str) -> None: ...
