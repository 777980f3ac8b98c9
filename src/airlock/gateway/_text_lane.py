"""Text lanes: the sandboxed workers of one (tenant, text model) pair, one generation per worker.

A generation holds its worker from the first token to ``done``: a request takes the lane's next
free worker (first come, first served, until its deadline), the worker's own thread streams the
tokens onto the event loop, and the worker goes back to the lane as soon as the job said ``done``.
Nothing of a request outlives it: the job keeps no cache between requests (see the text runtime),
and the lane never hands one tenant's worker to another (lanes are per tenant).

Stopping early (the client went away, the deadline passed) asks the job to stop between two tokens;
a job that has not answered ``done`` within :data:`~airlock.sandbox._text.CANCEL_GRACE` seconds is
dropped, and a job that sends nothing at all is killed :data:`KILL_AFTER` seconds after the stop
was asked (its thread may be waiting for a token that never comes). A worker that failed is killed
and replaced in the background; readiness counts only live workers. A worker that died while idle
is found when a request takes it, and replaced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Protocol

from airlock.errors import ModelError
from airlock.gateway._workers import (
    ModelFailed,
    WorkerCrashed,
    WorkerTimeout,
    kill_off_loop,
    start_replacement,
)
from airlock.sandbox._text import CANCEL_GRACE, Generation, TextStream

__all__ = ["KILL_AFTER", "TextBackend", "TextLane", "TextRun"]

_log = logging.getLogger("airlock.gateway")

#: seconds after a stop was asked before a job that sent nothing more is killed
KILL_AFTER: Final = CANCEL_GRACE + 0.5


class TextBackend(Protocol):
    def start(self) -> None:
        """Launch and load (blocking); raise AirlockError when that fails."""
        ...

    def generate(self, request: dict[str, Any]) -> TextStream:
        """Send one generation request (built by ``build_request``); iterate the stream it returns."""
        ...

    def context(self) -> int:
        """The context window the loaded model claims (0: unknown); a claim, bounded by the caller."""
        ...

    def alive(self) -> bool: ...

    def kill(self) -> None:
        """Kill the process tree now; safe to call from another thread and more than once."""
        ...

    @property
    def pid(self) -> int | None: ...


class TextRun:
    """One generation in progress: iterate :meth:`pieces` on the loop; :attr:`result` when it ended."""

    def __init__(self, lane: TextLane, backend: TextBackend) -> None:
        self._lane, self.backend = lane, backend
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.stop = threading.Event()
        #: set on the loop once the worker's thread has finished (the worker is back or replaced)
        self.ended = asyncio.Event()
        self.result: Generation | None = None
        #: tokens received from the job so far (its count when it failed before ``done``)
        self.received = 0
        #: the request's max_tokens (to judge the job's claims)
        self.max_tokens = 0
        #: the window the request gave the job (its ``context``; 0: the model's own): prompt and
        #: max_tokens must fit in it and the lane's context both
        self.window = 0
        self.error: BaseException | None = None
        #: the end of the pieces was read (later calls of :meth:`pieces` yield nothing)
        self._drained = False

    async def pieces(self) -> AsyncIterator[str]:
        """Each token's text as it arrives (the rest of them, when called again); raises
        :class:`WorkerCrashed` when the worker failed."""
        while not self._drained:
            piece = await self._queue.get()
            if piece is None:
                self._drained = True
                break
            yield piece
        if isinstance(self.error, ModelError):
            raise ModelFailed("the model refused the request") from self.error
        if self.error is not None:
            raise WorkerCrashed("the worker failed during the generation") from self.error

    def cancel(self) -> None:
        """Stop early (idempotent): the job is asked to stop; one that does not is killed."""
        if self.ended.is_set() or self.stop.is_set():
            return
        self.stop.set()
        self._lane._watch_stop(self)


class TextLane:
    """The workers of one (tenant, text model) pair."""

    def __init__(
        self, tenant: str, model: str, digest: str, factory: Callable[[], TextBackend], size: int,
        context_length: int = 0,
    ) -> None:  # fmt: skip
        self.tenant, self.model, self.digest = tenant, model, digest
        self._factory, self._size = factory, size
        #: the configured context window; 0: the smallest one the workers claim
        self._configured = context_length
        self.context = context_length
        self._all: list[TextBackend] = []
        self._idle: collections.deque[TextBackend] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[TextBackend]] = collections.deque()
        # one thread per running generation, plus starts and kills
        self._pool = ThreadPoolExecutor(max_workers=2 * size + 1, thread_name_prefix=f"text-{tenant}-{model}")
        self._tasks: set[asyncio.Task[None]] = set()
        self._replacing: set[int] = set()
        #: generations running now (for metrics and tests)
        self.running = 0
        self.restarted = 0
        self._closed = False

    # -- workers ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker; raise the first failure (the gateway then refuses to start)."""
        loop = asyncio.get_running_loop()
        backends = [self._factory() for _ in range(self._size)]
        self._all.extend(backends)
        await asyncio.gather(*(loop.run_in_executor(self._pool, b.start) for b in backends))
        if not self._configured:
            claims = [b.context() for b in backends]
            self.context = min(claims) if all(claims) else 0
        for backend in backends:
            self._release(backend)

    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        return not self._closed and any(b.alive() for b in self._all)

    def live_workers(self) -> int:
        return sum(b.alive() for b in self._all)

    def pids(self) -> list[int]:
        return [pid for b in self._all if b.alive() and (pid := b.pid) is not None]

    def _release(self, backend: TextBackend) -> None:
        """A free worker: to the first caller still waiting, else to the idle set."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(backend)
                return
        self._idle.append(backend)

    async def _acquire(self, deadline: float) -> TextBackend:
        while self._idle:
            backend = self._idle.popleft()
            if backend.alive():
                return backend
            self._replace_later(backend)  # died while idle
        waiter: asyncio.Future[TextBackend] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                backend = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed over as the wait ended: pass it on
            else:
                waiter.cancel()
                # out of the queue now: a waiter given up (deadline, client gone) must not stay
                # until a worker is released (with no worker coming back, never)
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        if not backend.alive():
            self._replace_later(backend)
            return await self._acquire(deadline)
        return backend

    def _replace_later(self, dead: TextBackend) -> None:
        if self._closed or id(dead) in self._replacing:
            return
        self._replacing.add(id(dead))
        task = asyncio.get_running_loop().create_task(self._replace(dead))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _kill(self, backend: TextBackend) -> None:
        await kill_off_loop(self._pool, backend)

    async def _replace(self, dead: TextBackend) -> None:
        try:
            await self._kill(dead)
            fresh = await start_replacement(self._pool, self._factory, self.closed, self.tenant, self.model)
            if fresh is None:
                return
            self._all = [b for b in self._all if b is not dead] + [fresh]
            self.restarted += 1
            self._release(fresh)
        finally:
            self._replacing.discard(id(dead))

    # -- generations -----------------------------------------------------------------------

    async def open(self, request: dict[str, Any], deadline: float) -> TextRun:
        """Take a free worker (waiting until ``deadline``, loop time) and start ``request`` on it."""
        try:
            backend = await self._acquire(deadline)
        except TimeoutError as exc:
            raise WorkerTimeout("no worker became free before the deadline") from exc
        run = TextRun(self, backend)
        run.max_tokens = int(request.get("max_tokens", 0))
        run.window = int(request.get("context", 0) or 0)
        self.running += 1
        loop = asyncio.get_running_loop()
        try:
            loop.run_in_executor(self._pool, self._generate, run, request, loop)
        except RuntimeError as exc:  # the lane closed meanwhile
            self.running -= 1
            raise WorkerCrashed("the lane is closed") from exc
        return run

    def _generate(self, run: TextRun, request: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        """The worker's thread for one generation: stream every token onto the loop."""
        error: BaseException | None = None
        result: Generation | None = None
        try:
            stream = run.backend.generate(request)
            try:
                for piece in stream:
                    run.received += 1
                    loop.call_soon_threadsafe(run._queue.put_nowait, piece)
                    if run.stop.is_set():
                        break
            finally:
                stream.close()  # at once after done; else the job is asked to stop (or dropped)
            result = stream.result
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._ended, run, result, error)

    def _ended(self, run: TextRun, result: Generation | None, error: BaseException | None) -> None:
        """On the loop: the worker's thread finished the generation."""
        # the window the job had to keep to: the smaller of the lane's context and the request's
        window = min((c for c in (self.context, run.window) if c), default=0)
        refused = result is not None and result.finish == "context" and bool(window)
        if refused and result is not None and result.prompt_tokens + run.max_tokens <= window:
            # a job that refuses a request its own count says fits is lying: it is not kept
            result, error = (
                None,
                WorkerCrashed("the job claimed a context overflow its own counts contradict"),
            )
        run.result, run.error = result, error
        self.running -= 1
        run.ended.set()
        run._queue.put_nowait(None)
        # a ModelError: the job caught the model's error on this request (its chat template's
        # raise_exception, no template at all) and waits for the next one; nothing to replace (a
        # restart per such request would let a caller keep model loads running)
        answered = (error is None and result is not None) or isinstance(error, ModelError)
        if answered and run.backend.alive() and not self._closed:
            self._release(run.backend)
        else:
            if error is not None:
                _log.warning("text worker failed", extra={"tenant": self.tenant, "model": self.model,
                                                          "error": str(error)[:500]})  # fmt: skip
            self._replace_later(run.backend)

    def _watch_stop(self, run: TextRun) -> None:
        """After a stop was asked: kill the worker if its thread has not finished in time."""

        async def watch() -> None:
            try:
                async with asyncio.timeout(KILL_AFTER):
                    await run.ended.wait()
            except TimeoutError:
                _log.warning("text worker did not stop; killed", extra={"tenant": self.tenant,
                                                                       "model": self.model})  # fmt: skip
                await self._kill(run.backend)  # its thread's read fails; the lane replaces it

        task = asyncio.get_running_loop().create_task(watch())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        for waiter in self._waiters:
            waiter.cancel()
        for task in list(self._tasks):
            task.cancel()
        for backend in self._all:
            backend.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
