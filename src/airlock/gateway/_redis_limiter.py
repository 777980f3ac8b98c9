"""Budgets shared by every replica, on Redis (``[limits] url = "redis://…"`` or ``rediss://``).

Each decision is one server-side Lua script (loaded once, then called by SHA: EVALSHA, reloaded
after a server restart), so the read-refill-take of a token bucket is atomic across replicas. The
time is the Redis server's (``TIME`` inside the script), never a replica's clock: replicas whose
clocks disagree still share one refill rate.

* Token buckets (requests, tensor bytes, text tokens): a hash {tokens, stamp} per tenant. Its key
  expires when the bucket would be full again anyway (its debt refilled), so idle tenants cost
  nothing.
* In-flight counts (requests, text generations): a sorted set per tenant whose members are this
  replica's request tickets, scored by the time each one expires (the request deadline plus a
  margin). Every entry first drops expired tickets: a replica killed mid-request leaks its slots
  only until their deadlines pass, never for good. A slot given back while Redis does not answer
  is remembered and removed as soon as the watch reaches Redis again.

Keys: ``<namespace>:<tenant>:<budget>`` (namespace ``airlock`` unless ``[limits] namespace`` says
otherwise; tenant names are ``[a-z0-9_.-]``, so no key can collide).
Every failure to reach Redis marks it down (:class:`._backend.Backend`) and raises
:class:`BackendUnavailable`: the request is refused, never served unlimited. ``leave`` never
raises (its ticket is removed when Redis answers again, or expires).
"""

from __future__ import annotations

import itertools
import math
import secrets
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from airlock.errors import UsageError
from airlock.gateway._backend import Backend, BackendConfig, read_password, redact, warn_unauthenticated
from airlock.gateway._config import TenantLimits
from airlock.gateway._limiter import Admit

__all__ = ["RedisLimiter"]

_T = TypeVar("_T")

#: KEYS[1] bucket; ARGV: capacity, refill per second, amount, mode ("take" or "settle").
#: Returns the seconds to wait as a string ("0" when taken).
_BUCKET: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, rate, amount = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = tonumber(state[1]), tonumber(state[2])
if tokens == nil or stamp == nil then tokens, stamp = cap, now end
if now > stamp then
  tokens = math.min(cap, tokens + (now - stamp) * rate)
  stamp = now
end
local wait = 0
if ARGV[4] == 'settle' then
  tokens = math.min(cap, tokens - amount)
elseif tokens >= amount then
  tokens = tokens - amount
else
  wait = (amount - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'stamp', string.format('%.17g', stamp))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""

#: KEYS[1] in-flight set; ARGV: cap, ticket, ticket lifetime (ms). Returns 1 (entered) or 0 (full).
_ENTER: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local expires = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], expires, ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], math.max(expires, tonumber(last[2])))
return 1
"""

#: a ticket outlives its request's deadline by this much (the outcome row, the reply, a slow loop)
_TICKET_MARGIN: Final = 60.0
#: tickets given back during an outage, kept to remove when Redis returns (beyond: they expire)
_MAX_UNRELEASED: Final = 65536


class RedisLimiter:
    name: Final = "redis"

    def __init__(
        self, config: BackendConfig, *, request_seconds: float, generation_seconds: float,
        ticket_margin: float = _TICKET_MARGIN,
    ) -> None:  # fmt: skip
        self._url = redact(config.url)
        self._namespace = config.namespace
        options: dict[str, Any] = {
            "password": read_password(config),
            "socket_timeout": config.timeout_seconds,
            "socket_connect_timeout": config.connect_timeout_seconds,
            # no retries: a failure is answered at once (503), and the watch finds the server again
            "retry": Retry(NoBackoff(), 0),
            "client_name": "airlock",
        }
        if config.ca_file is not None and not config.url.startswith("rediss://"):
            raise UsageError("config: limits.ca_file needs a rediss:// URL (TLS)")
        if config.url.startswith("rediss://"):
            # said, not left to redis-py's defaults: before 6.0 it did not check the host name, so
            # any certificate the CA (or, without ca_file, any public CA) signed for any name passed
            options["ssl_cert_reqs"] = "required"
            options["ssl_check_hostname"] = True
            if config.ca_file is not None:
                options["ssl_ca_certs"] = str(config.ca_file)
        self._client = redis.Redis.from_url(config.url, **options)
        self._bucket = self._client.register_script(_BUCKET)
        self._enter = self._client.register_script(_ENTER)
        # a request ticket lives as long as the longest request may (a text request holds one for its
        # whole generation), a generation ticket as long as a generation may
        self._request_ms = math.ceil((max(request_seconds, generation_seconds) + ticket_margin) * 1000)
        self._generation_ms = math.ceil((generation_seconds + ticket_margin) * 1000)
        self._replica = secrets.token_hex(8)
        self._serial = itertools.count()
        #: this replica's tickets per in-flight key (any one of them may be given back)
        self._tickets: dict[str, list[str]] = {}
        self._lock = threading.Lock()  # the gateway calls from its threads (._offload)
        #: (key, ticket) given back while Redis did not answer: removed by the next good probe
        self._unreleased: list[tuple[str, str]] = []
        try:
            self._client.ping()
        except redis.RedisError as exc:
            self._client.close()
            raise UsageError(f"limits: cannot reach Redis at {self._url} ({type(exc).__name__})") from exc
        warn_unauthenticated(
            "limits", config, verified=config.url.startswith("rediss://"),
            advice="use a rediss:// URL (and [limits] ca_file for a private CA)",
        )  # fmt: skip
        self.backend = Backend(
            "limits", config.url, self._probe, config.connect_timeout_seconds + config.timeout_seconds + 1.0
        )

    @property
    def available(self) -> bool:
        return self.backend.available

    def _probe(self) -> None:
        """Redis answers, and the slots given back while it did not are removed (before it is marked
        up again: a tenant's first request after an outage sees them free)."""
        self._client.ping()
        with self._lock:
            unreleased, self._unreleased = self._unreleased, []
        if not unreleased:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, ticket in unreleased:
                pipe.zrem(key, ticket)
            pipe.execute()
        except redis.RedisError:
            with self._lock:  # kept for the next probe; it stays down meanwhile
                self._unreleased[:0] = unreleased
            raise

    def _call(self, call: Callable[[], _T]) -> _T:
        self.backend.check()
        try:
            return call()
        except redis.RedisError as exc:
            raise self.backend.failed(exc) from exc

    def _take(self, tenant: str, budget: str, capacity: int, amount: int, mode: str = "take") -> float:
        key = f"{self._namespace}:{tenant}:{budget}"
        args: list[str | int] = [capacity, repr(capacity / 60.0), amount, mode]
        reply = self._call(lambda: self._bucket(keys=[key], args=args))
        return float(reply)

    def take_request(self, tenant: str, limits: TenantLimits, now: float) -> Admit:
        wait = self._take(tenant, "requests", limits.requests_per_minute, 1)
        return Admit(True) if wait == 0.0 else Admit(False, wait, "requests")

    def take_bytes(self, tenant: str, limits: TenantLimits, nbytes: int, now: float) -> Admit:
        wait = self._take(tenant, "tensor_bytes", limits.tensor_bytes_per_minute, nbytes)
        return Admit(True) if wait == 0.0 else Admit(False, wait, "tensor_bytes")

    def take_tokens(self, tenant: str, limits: TenantLimits, tokens: int, now: float) -> Admit:
        wait = self._take(tenant, "tokens", limits.tokens_per_minute, tokens)
        return Admit(True) if wait == 0.0 else Admit(False, wait, "tokens")

    def settle_tokens(self, tenant: str, limits: TenantLimits, delta: int, now: float) -> None:
        self._take(tenant, "tokens", limits.tokens_per_minute, delta, "settle")

    def _enter_set(self, key: str, cap: int, lifetime_ms: int) -> bool:
        ticket = f"{self._replica}:{next(self._serial)}"
        entered = self._call(lambda: self._enter(keys=[key], args=[cap, ticket, lifetime_ms]))
        if int(entered) != 1:
            return False
        with self._lock:
            self._tickets.setdefault(key, []).append(ticket)
        return True

    def _leave_set(self, key: str) -> None:
        with self._lock:
            tickets = self._tickets.get(key)
            if not tickets:
                return
            ticket = tickets.pop()
            if not tickets:
                del self._tickets[key]
        # never raises: a ticket that cannot be removed now (Redis down, or failing this call) is
        # removed by the watch once Redis answers again (else its tenant would run with one slot
        # less until the ticket's deadline: minutes after a blip of a second)
        try:
            if self.backend.available:
                self._client.zrem(key, ticket)
                return
        except redis.RedisError as exc:
            self.backend.failed(exc)
        with self._lock:
            if len(self._unreleased) < _MAX_UNRELEASED:  # beyond: they expire at their deadlines
                self._unreleased.append((key, ticket))

    def enter(self, tenant: str, limits: TenantLimits) -> bool:
        return self._enter_set(
            f"{self._namespace}:{tenant}:in_flight", limits.max_concurrent, self._request_ms
        )

    def leave(self, tenant: str) -> None:
        self._leave_set(f"{self._namespace}:{tenant}:in_flight")

    def enter_generation(self, tenant: str, limits: TenantLimits) -> bool:
        return self._enter_set(
            f"{self._namespace}:{tenant}:generations", limits.max_generations, self._generation_ms
        )

    def leave_generation(self, tenant: str) -> None:
        self._leave_set(f"{self._namespace}:{tenant}:generations")

    def close(self) -> None:
        self.backend.close()
        self._client.close()
