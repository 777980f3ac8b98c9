"""Audit appends with group commit on the event loop.

Every inference call writes one or two audit rows, and a request may not go on before its row is
committed (a call that cannot be audited is never served). The rows that requests hand in during
one turn of the event loop are committed together in one transaction at the end of that turn, so
under load one commit serves many requests, and a single request pays one commit as before. (A
writer thread was tried: on a small, busy machine the GIL handoffs cost more than the commits.)
The caller awaits its row: the answer comes only once the row is committed (or
:class:`AuditUnavailable` when it is not).

A store on a server (PostgreSQL) is written off the event loop, one batch at a time in the store's
threads (:func:`._offload.offload`, bounded in time): rows handed in while a commit is in flight go
in the next one, and a slow or dead server holds up only the requests waiting for their rows, never
the loop.
"""

from __future__ import annotations

import asyncio
from typing import Final

from airlock.gateway._backend import BackendUnavailable
from airlock.gateway._offload import offload
from airlock.gateway._store import AuditEntry, AuditUnavailable, Store

__all__ = ["AuditWriter"]

#: rows per transaction at most (a bound on how long one commit holds the loop)
_BATCH: Final = 256


class AuditWriter:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[tuple[AuditEntry, asyncio.Future[None]]] = []
        self._scheduled = False
        self._offload = getattr(store, "backend", None) is not None
        self._task: asyncio.Task[None] | None = None

    async def append(self, entry: AuditEntry) -> None:
        """Return once ``entry`` is committed; raise AuditUnavailable when it cannot be."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((entry, future))
        if not self._scheduled:
            self._scheduled = True
            if self._offload:
                self._task = loop.create_task(self._drain())
            else:
                loop.call_soon(self._flush, loop)
        await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
        if self._pending:
            loop.call_soon(self._flush, loop)
        else:
            self._scheduled = False
        self._settle(batch, self._write(batch))

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                try:
                    error = await offload(self._store, self._write, batch)
                except BackendUnavailable as exc:  # down, or no answer in time
                    error = AuditUnavailable(str(exc))
                self._settle(batch, error)
        finally:
            self._scheduled = False

    def _write(self, batch: list[tuple[AuditEntry, asyncio.Future[None]]]) -> AuditUnavailable | None:
        try:
            self._store.append_audit_many([entry for entry, _ in batch])
        except AuditUnavailable as exc:
            return exc
        except Exception as exc:
            return AuditUnavailable(f"audit append failed: {type(exc).__name__}")
        return None

    @staticmethod
    def _settle(batch: list[tuple[AuditEntry, asyncio.Future[None]]], error: AuditUnavailable | None) -> None:
        for _, future in batch:
            if future.done():  # the request was cancelled (client gone); its row is written anyway
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def close(self) -> None:
        """Nothing is buffered between turns of the loop; kept for symmetry with other backends."""
