"""Audit appends with group commit, off the event loop.

Every inference call writes one or two audit rows, and a request may not go on before its row is
committed (a call that cannot be audited is never served). Rows are committed in batches: the
rows handed in while a commit is in flight go together in the next one, so under load one commit
serves many requests, and a single request pays one commit.

No commit runs on the event loop: a commit can wait for a lock another process holds on the state
(an operator's ``sqlite3`` shell, a backup, a migration: up to SQLite's busy timeout) or for the
disk, and the loop serves every tenant, the health probes and the metrics. The embedded store
(SQLite) is written in this writer's own thread (one: the appends serialise anyway); a store on a
server (PostgreSQL) in the store's threads (:func:`._offload.offload`, bounded in time). The loop
only awaits each request's row, at most until the request's deadline: a row not committed by then
refuses that request with the audit 503 (:class:`AuditUnavailable`), and only the requests whose
rows wait are held up. A row still queued at its deadline is withdrawn; one already handed to the
commit in flight may land after its request was refused (the log then shows a ``started`` row
without an outcome row). At most :data:`MAX_QUEUED` rows wait: past that a row is refused at once
(a store locked for minutes never grows the gateway's memory).

:attr:`AuditWriter.writable` is what readiness reports: false after a commit failed (until one
succeeds) and while a commit has been in flight for longer than :data:`STALLED_AFTER`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from airlock.gateway._backend import BackendUnavailable
from airlock.gateway._offload import offload
from airlock.gateway._store import AuditEntry, AuditUnavailable, Store

__all__ = ["MAX_QUEUED", "STALLED_AFTER", "AuditWriter"]

#: rows per transaction at most
_BATCH: Final = 256
#: a commit in flight for longer than this (seconds) makes the store "not writable" for readiness
STALLED_AFTER: Final = 2.0
#: rows waiting for a commit at most (beyond, a row is refused at once)
MAX_QUEUED: Final = 16384

_Pending = tuple[AuditEntry, "asyncio.Future[None] | None"]


class AuditWriter:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        server = getattr(store, "backend", None) is not None
        self._thread = None if server else ThreadPoolExecutor(1, thread_name_prefix="airlock-audit")
        #: monotonic time the commit in flight began (None: none in flight)
        self._since: float | None = None
        self._failed = False

    @property
    def writable(self) -> bool:
        """False after a failed commit (until one succeeds) or while one is stalled."""
        since = self._since
        return not self._failed and (since is None or time.monotonic() - since < STALLED_AFTER)

    async def append(self, entry: AuditEntry, deadline: float | None = None) -> None:
        """Return once ``entry`` is committed; raise AuditUnavailable when it cannot be, or is not
        by ``deadline`` (event loop time)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        item = (entry, future)
        self._queue(loop, item)
        if deadline is None:
            await future
            return
        try:
            async with asyncio.timeout_at(deadline):
                await future
        except TimeoutError:
            with contextlib.suppress(ValueError):  # still queued: withdrawn (in flight: it may land)
                self._pending.remove(item)
            raise AuditUnavailable(
                "the audit row was not committed in time (the store is locked or slow)"
            ) from None

    def post(self, entry: AuditEntry) -> None:
        """Hand in a row nobody waits for (a cancelled request's end): written with the next batch."""
        with contextlib.suppress(AuditUnavailable):
            self._queue(asyncio.get_running_loop(), (entry, None))

    def _queue(self, loop: asyncio.AbstractEventLoop, item: _Pending) -> None:
        if len(self._pending) >= MAX_QUEUED:
            self._failed = True
            raise AuditUnavailable(f"{MAX_QUEUED} audit rows already wait for the store")
        self._pending.append(item)
        if self._task is None:
            self._task = loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                self._since = time.monotonic()
                try:
                    if self._thread is None:
                        error = await offload(self._store, self._write, batch)
                    else:
                        error = await asyncio.wrap_future(self._thread.submit(self._write, batch))
                except BackendUnavailable as exc:  # down, or no answer in time
                    error = AuditUnavailable(str(exc))
                except RuntimeError:  # the writer was closed (the gateway is stopping)
                    error = AuditUnavailable("the audit writer is closed")
                finally:
                    self._since = None
                self._failed = error is not None
                self._settle(batch, error)
        finally:
            self._task = None

    def _write(self, batch: list[_Pending]) -> AuditUnavailable | None:
        try:
            self._store.append_audit_many([entry for entry, _ in batch])
        except AuditUnavailable as exc:
            return exc
        except Exception as exc:
            return AuditUnavailable(f"audit append failed: {type(exc).__name__}")
        return None

    @staticmethod
    def _settle(batch: list[_Pending], error: AuditUnavailable | None) -> None:
        for _, future in batch:
            # None: nobody waits; done: the request gave up (deadline, client gone); its row is written anyway
            if future is None or future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    async def flush(self, timeout: float) -> None:
        """Until every row handed in is committed or refused (at shutdown, before the store closes),
        at most ``timeout`` seconds (a store locked for longer loses the rows still queued)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._task is not None:
                    await asyncio.shield(self._task)

    def close(self) -> None:
        """Stop the writer thread (a commit in flight finishes; nothing is queued after it)."""
        if self._thread is not None:
            self._thread.shutdown(wait=False)
