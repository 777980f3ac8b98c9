"""Opening the configured backends: the state (SQLite or PostgreSQL) and the budgets (in process
or Redis). psycopg and redis-py are imported only when configured (the ``scale`` extra)."""

from __future__ import annotations

from airlock.gateway._config import GatewayConfig
from airlock.gateway._limiter import RateLimiter
from airlock.gateway._memory_limiter import MemoryLimiter
from airlock.gateway._sqlite_store import SqliteStore
from airlock.gateway._store import Store

__all__ = ["migrate_state", "open_limiter", "open_store"]


def open_store(config: GatewayConfig, *, audit_key: bytes | None = None) -> Store:
    """The configured state backend: PostgreSQL with ``[state] url``, else the SQLite file.

    ``audit_key`` (from :func:`load_key`) is needed only to append audit rows: the gateway passes it,
    the tenant and key commands do not."""
    if config.state_backend is not None:
        from airlock.gateway._pg_store import PostgresStore  # psycopg: the `scale` extra

        return PostgresStore(config.state_backend, audit_key)
    return SqliteStore(config.server.state, audit_key)


def open_limiter(config: GatewayConfig) -> RateLimiter:
    """The configured budgets: Redis with ``[limits] url`` (shared by replicas), else in process."""
    if config.limits_backend is not None:
        from airlock.gateway._redis_limiter import RedisLimiter  # redis-py: the `scale` extra

        return RedisLimiter(
            config.limits_backend,
            request_seconds=config.server.request_timeout_seconds,
            generation_seconds=config.server.generation_timeout_seconds,
        )
    return MemoryLimiter()


def migrate_state(config: GatewayConfig) -> str:
    """``airlock serve --migrate``: bring the PostgreSQL schema up to date; a line saying what was done."""
    if config.state_backend is None:
        return "state: SQLite brings its own schema up to date when opened; nothing to migrate"
    from airlock.gateway._backend import redact
    from airlock.gateway._pg_store import migrate

    before, after = migrate(config.state_backend)
    where = redact(config.state_backend.url)
    if before == after:
        return f"state: {where} is at schema version {after}; nothing to migrate"
    return f"state: {where} migrated from schema version {before} to {after}"
