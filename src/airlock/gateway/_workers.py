"""Workers behind the gateway: one lane of sandboxed workers per (tenant, model), never shared.

A :class:`WorkerBackend` is one loaded model in one isolated process tree. The only backend is
:class:`SandboxWorker` (an :class:`airlock.sandbox.Worker` with its own sandbox): every model the
gateway serves has passed admission and runs sandboxed; there is deliberately no in-process or
unsandboxed backend.

A :class:`Lane` owns its workers and a private thread pool (so one tenant's slow model can never
starve another tenant's threads); its ``workers`` run requests concurrently, one request per worker.
A worker that fails mid-request is killed, that request gets a :class:`WorkerCrashed`, and a
replacement starts in the background (a model that merely raised on its inputs is not a failure:
the request gets :class:`ModelFailed` and the worker serves on); a request that outlives its deadline gets
:class:`WorkerTimeout` and its worker is killed and replaced the same way.

Workers are watched: each worker's process is held by a pidfd registered with the event loop, so a
worker that dies while idle (the OOM killer, an operator's ``kill``) is noticed at once, dropped
from the idle set and replaced; readiness counts only live workers. Where pidfds are missing
(Linux < 5.3) a watcher polls every 0.2 s instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from airlock.errors import AirlockError, ModelError
from airlock.sandbox import SandboxPolicy, Worker

__all__ = ["Lane", "ModelFailed", "SandboxWorker", "WorkerBackend", "WorkerCrashed", "WorkerTimeout"]

_log = logging.getLogger("airlock.gateway")
Arrays = Mapping[str, np.ndarray[Any, Any]]


class WorkerBackend(Protocol):
    def start(self) -> None:
        """Launch and load (blocking); raise AirlockError when that fails."""
        ...

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]: ...

    def alive(self) -> bool: ...

    def exit_fd(self) -> int | None:
        """A file descriptor that becomes readable when the worker's process exits (a pidfd), or None."""
        ...

    def kill(self) -> None:
        """Kill the process tree now; safe to call from another thread and more than once."""
        ...

    @property
    def pid(self) -> int | None:
        """Host pid of the worker's outermost process (for operators and tests)."""
        ...


class SandboxWorker:
    """An admitted model loaded in its own sandbox (own launcher, namespaces, seccomp, rlimits)."""

    def __init__(
        self, path: Path, runtime: str | None, policy: SandboxPolicy, definition: Path | None = None
    ) -> None:
        self._path, self._runtime, self._policy = path, runtime, policy
        self._definition = definition
        self._worker: Worker | None = None
        self._dead = False
        self._lock = threading.Lock()

    def start(self) -> None:
        self._worker = Worker(
            self._path, runtime=self._runtime, definition=self._definition, policy=self._policy
        )

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        worker = self._worker
        if worker is None or self._dead:
            raise WorkerCrashed("worker is not running")
        return worker.infer(inputs)

    def _process(self) -> Any:
        worker = self._worker
        launched = getattr(worker.sandbox, "_launched", None) if worker is not None else None
        return getattr(launched, "process", None)

    def alive(self) -> bool:
        if self._worker is None or self._dead:
            return False
        process = self._process()
        return process is not None and process.poll() is None

    def exit_fd(self) -> int | None:
        process = self._process()
        if process is None or not hasattr(os, "pidfd_open"):
            return None
        try:
            return os.pidfd_open(process.pid)
        except OSError:
            return None

    def kill(self) -> None:
        with self._lock:
            self._dead = True
            worker = self._worker
        if worker is not None:
            with contextlib.suppress(AirlockError, OSError):
                worker.sandbox.kill()
            with contextlib.suppress(AirlockError, OSError):
                worker.close()

    @property
    def pid(self) -> int | None:
        # the launcher process of this worker's own sandbox (airlock.sandbox keeps it on _launched)
        pid = getattr(self._process(), "pid", None)
        return pid if isinstance(pid, int) else None


class WorkerCrashed(Exception):
    """The worker died or broke its protocol during a request."""


class ModelFailed(Exception):
    """The model raised on this request's inputs; its worker answered and serves on."""


class WorkerTimeout(Exception):
    """The request outlived its deadline; its worker was killed."""


class Lane:
    """The workers of one (tenant, model) pair."""

    def __init__(
        self, tenant: str, model: str, digest: str, factory: Callable[[], WorkerBackend], size: int
    ) -> None:
        self.tenant, self.model, self.digest = tenant, model, digest
        self._factory = factory
        self._size = size
        self._idle: asyncio.Queue[WorkerBackend] = asyncio.Queue()
        self._all: list[WorkerBackend] = []
        self._pool = ThreadPoolExecutor(max_workers=size + 1, thread_name_prefix=f"lane-{tenant}-{model}")
        self._restarts: set[asyncio.Task[None]] = set()
        self._replacing: set[int] = set()
        self._watches: dict[int, tuple[int | None, asyncio.Task[None] | None]] = {}
        self.restarted = 0
        #: requests handed to a worker (for metrics and tests)
        self.dispatched = 0
        self._closed = False

    async def start(self) -> None:
        """Start every worker; raise the first failure (the gateway then refuses to start)."""
        loop = asyncio.get_running_loop()
        backends = [self._factory() for _ in range(self._size)]
        self._all.extend(backends)
        await asyncio.gather(*(loop.run_in_executor(self._pool, b.start) for b in backends))
        for backend in backends:
            self._watch(backend)
            self._idle.put_nowait(backend)

    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        return not self._closed and any(b.alive() for b in self._all)

    def live_workers(self) -> int:
        return sum(b.alive() for b in self._all)

    def pids(self) -> list[int]:
        return [pid for b in self._all if b.alive() and (pid := b.pid) is not None]

    def _watch(self, backend: WorkerBackend) -> None:
        loop = asyncio.get_running_loop()
        fd = backend.exit_fd()
        if fd is not None:
            loop.add_reader(fd, self._exited, backend)
            self._watches[id(backend)] = (fd, None)
        else:
            self._watches[id(backend)] = (None, loop.create_task(self._poll(backend)))

    def _unwatch(self, backend: WorkerBackend) -> None:
        fd, task = self._watches.pop(id(backend), (None, None))
        if fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _poll(self, backend: WorkerBackend) -> None:
        while backend.alive():
            await asyncio.sleep(0.2)
        self._exited(backend)

    def _exited(self, backend: WorkerBackend) -> None:
        """The worker's process ended (its pidfd became readable): replace it now."""
        self._unwatch(backend)
        if not self._closed:
            _log.warning("worker exited", extra={"tenant": self.tenant, "model": self.model})
            self._schedule_replace(backend)

    async def _replace(self, dead: WorkerBackend) -> None:
        loop = asyncio.get_running_loop()
        self._unwatch(dead)
        await loop.run_in_executor(self._pool, dead.kill)
        delay = 0.5
        while not self.closed():
            fresh = self._factory()
            try:
                await loop.run_in_executor(self._pool, fresh.start)
            except AirlockError as exc:
                _log.error(
                    "worker restart failed",
                    extra={"tenant": self.tenant, "model": self.model, "error": str(exc)[:500]},
                )
                fresh.kill()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self.closed():  # closed while this worker was starting
                fresh.kill()
                return
            self._all = [b for b in self._all if b is not dead] + [fresh]
            self._replacing.discard(id(dead))
            self.restarted += 1
            _log.warning("worker restarted", extra={"tenant": self.tenant, "model": self.model})
            self._watch(fresh)
            self._idle.put_nowait(fresh)
            return

    def _schedule_replace(self, dead: WorkerBackend) -> None:
        if id(dead) in self._replacing or self._closed:
            return  # the watcher and a failed request may both notice the same death
        self._replacing.add(id(dead))
        task = asyncio.get_running_loop().create_task(self._replace(dead))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _idle_worker(self) -> WorkerBackend:
        while True:
            backend = await self._idle.get()
            if backend.alive():
                return backend
            self._schedule_replace(backend)  # died while idle: its replacement joins the queue

    async def infer(self, inputs: Arrays, deadline: float) -> dict[str, np.ndarray[Any, Any]]:
        """Run one inference on an idle worker before ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                backend = await self._idle_worker()
        except TimeoutError as exc:
            raise WorkerTimeout("no worker became free before the deadline") from exc
        self.dispatched += 1
        future = loop.run_in_executor(self._pool, backend.infer, inputs)
        try:
            async with asyncio.timeout_at(deadline):
                result = await asyncio.shield(future)
        except TimeoutError as exc:
            backend.kill()
            with contextlib.suppress(BaseException):
                await future
            self._schedule_replace(backend)
            raise WorkerTimeout("the request outlived its deadline; worker killed") from exc
        except ModelError as exc:
            # the job caught the model's exception and waits for the next request: nothing to
            # replace (a restart per wrong input would let a caller keep sandboxes starting)
            if backend.alive():
                self._idle.put_nowait(backend)
            else:
                self._schedule_replace(backend)
            raise ModelFailed(str(exc)) from exc
        except AirlockError as exc:
            self._schedule_replace(backend)
            raise WorkerCrashed(str(exc)) from exc
        except WorkerCrashed:
            self._schedule_replace(backend)
            raise
        except asyncio.CancelledError:
            # the client went away: the worker may still be busy; let it finish, then return it
            future.add_done_callback(lambda _f: self._idle.put_nowait(backend) if backend.alive() else None)
            raise
        self._idle.put_nowait(backend)
        return result

    async def close(self) -> None:
        self._closed = True
        for task in list(self._restarts):
            task.cancel()
        for backend in list(self._all):
            self._unwatch(backend)
        for backend in self._all:
            backend.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
