"""Workers behind the gateway: one lane of sandboxed workers per (tenant, model), never shared.

A :class:`WorkerBackend` is one loaded model in one isolated process tree. The only backend is
:class:`SandboxWorker` (an :class:`airlock.sandbox.Worker` with its own sandbox): every model the
gateway serves has passed admission and runs sandboxed; there is deliberately no in-process or
unsandboxed backend.

A :class:`Lane` owns its workers, one thread per worker and a private queue of requests (so one
tenant's slow model can never starve another tenant's threads); its ``workers`` run requests
concurrently, one request per worker, each taking the next queued request as soon as it answered.
A worker that fails mid-request is killed, that request gets a :class:`WorkerCrashed`, and a
replacement starts in the background (a model that merely raised on its inputs is not a failure:
the request gets :class:`ModelFailed` and the worker serves on); a request that outlives its deadline gets
:class:`WorkerTimeout` and its worker is killed and replaced the same way.

Workers are watched: each worker's outer process is held by a pidfd, and the two sockets that carry
its requests (the job's channel, the zygote's control socket) are watched for a hang-up, all in one
epoll set registered with the event loop, so a worker any process of which dies while idle (the OOM
killer picking the job that holds the model, an operator's ``kill`` of the zygote) is noticed at
once, dropped from the idle set and replaced; readiness counts only live workers. Where pidfds are missing
(Linux < 5.3) a watcher polls every 0.2 s instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import select
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import numpy as np

from airlock._strictjson import parse_json_strict
from airlock.errors import AirlockError, FormatError, ModelError
from airlock.gateway._bytes import is_bytes, tensor_bytes
from airlock.gateway._config import MAX_CONTEXT
from airlock.sandbox import SandboxPolicy, Worker
from airlock.sandbox._text import TextStream

__all__ = [
    "Lane",
    "ModelFailed",
    "SandboxWorker",
    "WorkerBackend",
    "WorkerCrashed",
    "WorkerTimeout",
    "context_claim",
]

_log = logging.getLogger("airlock.gateway")
_HANGUP: Final = select.POLLRDHUP | select.POLLHUP | select.POLLERR
#: a request's tensors: numpy arrays, BYTES ones as object arrays or PackedBytes
Arrays = Mapping[str, Any]
_B = TypeVar("_B", bound="_Startable")


class WorkerBackend(Protocol):
    def start(self) -> None:
        """Launch and load (blocking); raise AirlockError when that fails."""
        ...

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        """One request: :meth:`send` then :meth:`receive`."""
        ...

    def send(self, inputs: Arrays) -> None:
        """Send a request; the worker answers requests in order, one at a time."""
        ...

    def receive(self) -> dict[str, np.ndarray[Any, Any]]:
        """The answer to the oldest request sent and not yet answered."""
        ...

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
        #: pidfds behind the epoll sets :meth:`exit_fd` handed out
        self._pidfds: list[int] = []

    def start(self) -> None:
        self._worker = Worker(
            self._path, runtime=self._runtime, definition=self._definition, policy=self._policy
        )

    def _running(self) -> Worker:
        worker = self._worker
        if worker is None or self._dead:
            raise WorkerCrashed("worker is not running")
        return worker

    # BYTES outputs stay packed (offsets + one buffer): the gateway never steps through elements
    def infer(self, inputs: Arrays) -> dict[str, Any]:
        return self._running().infer(inputs, packed=True)

    def send(self, inputs: Arrays) -> None:
        self._running().send_infer(inputs)

    def receive(self) -> dict[str, Any]:
        return self._running().receive_infer(packed=True)

    def generate(self, request: dict[str, Any]) -> TextStream:
        """A text model's generation (``request`` from ``build_request``), streamed."""
        return TextStream(self._running(), request)

    def context(self) -> int:
        """The context window the loaded text model claims (0 when it does not say)."""
        worker = self._worker
        return context_claim(worker.info.summary) if worker is not None else 0

    def _process(self) -> Any:
        worker = self._worker
        launched = getattr(worker.sandbox, "_launched", None) if worker is not None else None
        return getattr(launched, "process", None)

    def _channels(self) -> list[int]:
        worker = self._worker
        return worker.channel_fds() if worker is not None else []

    def alive(self) -> bool:
        """The sandbox's outer process runs, and neither socket that carries its requests has hung
        up (the job, or the zygote between, died inside a sandbox whose launcher lives on)."""
        if self._worker is None or self._dead:
            return False
        process = self._process()
        if process is None or process.poll() is not None:
            return False
        poller = select.poll()
        for fd in self._channels():
            poller.register(fd, _HANGUP)
        return not any(event & _HANGUP for _fd, event in poller.poll(0))

    def exit_fd(self) -> int | None:
        """An epoll descriptor, readable when the sandbox's outer process exits (its pidfd) or
        either request socket hangs up (``EPOLLRDHUP`` only: a reply arriving does not wake it)."""
        process = self._process()
        if process is None or not hasattr(os, "pidfd_open"):
            return None
        watch = select.epoll()
        try:
            pidfd = os.pidfd_open(process.pid)
        except OSError:
            watch.close()
            return None
        # the epoll set holds no reference to the pidfd: it is kept (closed with the worker)
        self._pidfds.append(pidfd)
        watch.register(pidfd, select.EPOLLIN)
        for fd in self._channels():
            watch.register(fd, select.EPOLLRDHUP)
        fd = os.dup(watch.fileno())  # the same epoll set, outliving this object
        watch.close()
        return fd

    def kill(self) -> None:
        with self._lock:
            self._dead = True
            worker = self._worker
            pidfds, self._pidfds = self._pidfds, []
        for pidfd in pidfds:
            with contextlib.suppress(OSError):
                os.close(pidfd)
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


def context_claim(summary: str) -> int:
    """The ``context`` a text job reported in its load summary (JSON), or 0 when absent or not a
    whole number in [1, MAX_CONTEXT] (the job is not trusted to say anything sensible)."""
    try:
        value = parse_json_strict(summary, "load summary")
    except FormatError:
        return 0
    found = value.get("context") if isinstance(value, dict) else None
    if not isinstance(found, int) or isinstance(found, bool) or not 0 < found <= MAX_CONTEXT:
        return 0
    return found


class WorkerCrashed(Exception):
    """The worker died or broke its protocol during a request."""


class ModelFailed(Exception):
    """The model raised on this request's inputs; its worker answered and serves on."""


class WorkerTimeout(Exception):
    """The request outlived its deadline; its worker was killed."""


class _Job:
    """One request for a lane: queued, sent to one worker (ahead, or to run now), answered; or
    abandoned before it ran."""

    __slots__ = ("answer", "backend", "future", "inputs", "state")

    def __init__(self, inputs: Arrays, future: asyncio.Future[dict[str, np.ndarray[Any, Any]]]) -> None:
        self.inputs, self.future = inputs, future
        self.state = _QUEUED
        self.backend: WorkerBackend | None = None
        #: the worker's answer (result, error), kept by its thread before the loop hears of it
        self.answer: tuple[dict[str, np.ndarray[Any, Any]] | None, BaseException | None] | None = None


#: queued; sent to a worker while it still runs the previous request; running; answered (by the
#: worker: its thread holds the answer, the loop has not had it yet); answered on the loop; dropped
_QUEUED, _AHEAD, _RUNNING, _ANSWERED, _DONE, _ABANDONED = 0, 1, 2, 3, 4, 5
#: a request is sent to a busy worker ahead of time only when it is this small: it then fits in the
#: socket's buffer, so the send never waits for the worker (which reads it only after answering)
AHEAD_BYTES: Final = 16 * 1024
AHEAD_INPUTS: Final = 16


def _failure(error: BaseException) -> BaseException:
    """What the caller of :meth:`Lane.infer` gets for a worker's error."""
    if isinstance(error, ModelError):
        # the job caught the model's exception and waits for the next request: nothing to
        # replace (a restart per wrong input would let a caller keep sandboxes starting)
        return ModelFailed(str(error))
    if isinstance(error, AirlockError):
        return WorkerCrashed(str(error))
    return error


def _small(inputs: Arrays) -> bool:
    # a BYTES tensor's frame: 8 bytes of offsets per element and the elements' bytes (tensor_bytes
    # counts 4 per element)
    if len(inputs) > AHEAD_INPUTS or any(is_bytes(a) and 8 * a.size > AHEAD_BYTES for a in inputs.values()):
        return False  # (checked first: a large BYTES tensor's elements are never summed here)
    size = sum(tensor_bytes(a) + 4 * a.size if is_bytes(a) else int(a.nbytes) for a in inputs.values())
    return size <= AHEAD_BYTES


class _Killable(Protocol):
    def kill(self) -> None: ...


class _Startable(_Killable, Protocol):
    def start(self) -> None: ...


async def kill_off_loop(pool: ThreadPoolExecutor, backend: _Killable) -> None:
    """Kill ``backend`` off the loop (it waits for the worker tree to exit); at once once the
    lane's pool is shut down."""
    try:
        await asyncio.get_running_loop().run_in_executor(pool, backend.kill)
    except RuntimeError:  # the pool was shut down (the lane closed)
        backend.kill()


async def start_replacement(
    pool: ThreadPoolExecutor, factory: Callable[[], _B], closed: Callable[[], bool], tenant: str, model: str
) -> _B | None:
    """A fresh worker from ``factory``, started off the loop, retried with back-off (0.5 s doubling
    to 30 s) while starting fails; None when the lane closed first (a worker started meanwhile is
    killed). Shared by tensor and text lanes."""
    loop = asyncio.get_running_loop()
    delay = 0.5
    while not closed():
        fresh = factory()
        try:
            await loop.run_in_executor(pool, fresh.start)
        except AirlockError as exc:
            _log.error(
                "worker restart failed", extra={"tenant": tenant, "model": model, "error": str(exc)[:500]}
            )
            await kill_off_loop(pool, fresh)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        if closed():  # closed while this worker was starting
            await kill_off_loop(pool, fresh)
            return None
        _log.warning("worker restarted", extra={"tenant": tenant, "model": model})
        return fresh
    return None


class Lane:
    """The workers of one (tenant, model) pair.

    Each worker has its own thread that takes the lane's next request from a queue as soon as it
    has answered the last one: a worker never waits for the event loop between requests, and
    ``workers = N`` run N requests at once. While every worker is busy, each thread also sends the
    next small request to its worker ahead of time, so the worker finds it waiting when it has
    answered (no thread or process wake-up between two requests). The loop only queues a request
    and awaits its answer; deadlines, kills and replacements are decided on the loop. A request sent
    ahead that is still waiting when its deadline passes is a 504 without killing anyone; its
    worker is replaced once it gets to it (nothing runs for a caller who has gone)."""

    def __init__(
        self, tenant: str, model: str, digest: str, factory: Callable[[], WorkerBackend], size: int
    ) -> None:
        self.tenant, self.model, self.digest = tenant, model, digest
        self._factory = factory
        self._size = size
        #: guards the queue, each job's state and the set of retired workers (loop and threads)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: collections.deque[_Job] = collections.deque()
        #: threads waiting for a request (a busy worker sends nothing ahead while one waits)
        self._waiting = 0
        #: workers whose threads take no more requests. Held weakly, by the object itself: an
        #: ``id()`` is reused once its object is freed, and a replacement that got a retired
        #: worker's id was taken for retired too (its thread returned at once: a live worker that
        #: never served). A weak set also forgets the dead instead of growing with each restart.
        self._retired: weakref.WeakSet[WorkerBackend] = weakref.WeakSet()
        self._threads: list[threading.Thread] = []
        self._all: list[WorkerBackend] = []
        # starting and killing workers (blocking calls) happen here, off the loop
        self._pool = ThreadPoolExecutor(max_workers=size + 1, thread_name_prefix=f"lane-{tenant}-{model}")
        self._restarts: set[asyncio.Task[None]] = set()
        self._replacing: weakref.WeakSet[WorkerBackend] = weakref.WeakSet()
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
            self._serve(backend)

    def _serve(self, backend: WorkerBackend) -> None:
        thread = threading.Thread(
            target=self._guarded, args=(backend, asyncio.get_running_loop()),
            name=f"lane-{self.tenant}-{self.model}", daemon=True,
        )  # fmt: skip
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _drop_abandoned(self) -> None:
        while self._queue and self._queue[0].state == _ABANDONED:
            self._queue.popleft()

    def _next(self, backend: WorkerBackend) -> _Job | None:
        """The next request, now running on ``backend``; None when the lane closes, the worker was
        retired, or it died while idle (its request stays queued for the others)."""
        with self._changed:
            self._waiting += 1
            try:
                while True:
                    if self._closed or backend in self._retired:
                        return None
                    self._drop_abandoned()
                    if self._queue:
                        break
                    self._changed.wait()
            finally:
                self._waiting -= 1
            if not backend.alive():
                self._changed.notify()  # the request is for another worker
                return None
            job = self._queue.popleft()
            job.state, job.backend = _RUNNING, backend
            self.dispatched += 1
            return job

    def _ahead(self, backend: WorkerBackend) -> _Job | None:
        """The next request, to be sent ahead to ``backend`` (busy): only when no worker is idle
        (an idle one takes it at once), the request is small, and the queue holds a request for
        each of the lane's other workers too. A request sent ahead waits for all of this worker's
        current one, however long: with fewer queued, another worker could free up and idle
        while it waits (a small request held 21 s behind a long one that way)."""
        with self._lock:
            if self._waiting:
                return None
            self._drop_abandoned()
            if len(self._queue) < self._size or not _small(self._queue[0].inputs):
                return None
            job = self._queue.popleft()
            job.state, job.backend = _AHEAD, backend
            self.dispatched += 1
            return job

    def _requeue(self, job: _Job) -> None:
        """A request sent ahead to a worker that failed first: it never ran; it goes first again."""
        with self._changed:
            if job.state == _AHEAD:
                job.state, job.backend = _QUEUED, None
                self._queue.appendleft(job)
                self._changed.notify()

    @staticmethod
    def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> bool:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _guarded(self, backend: WorkerBackend, loop: asyncio.AbstractEventLoop) -> None:
        """:meth:`_run`; should it ever fail, its worker is replaced rather than left unserved (a
        request it had taken then meets its deadline, which kills that worker)."""
        try:
            self._run(backend, loop)
        except BaseException as exc:
            _log.error("worker thread failed", extra={"tenant": self.tenant, "model": self.model,
                                                      "error": type(exc).__name__})  # fmt: skip
            self._post(loop, self._schedule_replace, backend)

    def _run(self, backend: WorkerBackend, loop: asyncio.AbstractEventLoop) -> None:
        """A worker's thread: run the lane's requests one after another until the worker fails,
        dies, is retired, or the lane closes."""
        ahead: _Job | None = None
        while True:
            if ahead is None:
                job = self._next(backend)
                if job is None:
                    if not self._closed and backend not in self._retired:  # died while idle
                        self._post(loop, self._schedule_replace, backend)
                    return
                try:
                    backend.send(job.inputs)
                except BaseException as exc:
                    self._post(loop, self._finish, job, None, exc, False)
                    return
            else:
                job, ahead = ahead, None
                if backend in self._retired:
                    # retired (being killed) after its last answer: the request sent ahead never
                    # ran; it goes back to the queue for the replacement, not down with this one
                    self._requeue(job)
                    return
                with self._lock:
                    stale = job.state == _ABANDONED
                    if not stale:
                        job.state = _RUNNING
                if stale:
                    # its deadline passed while it waited behind the last one: as at any
                    # deadline, the worker is killed (it would run for nobody) and replaced
                    backend.kill()
                    self._post(loop, self._schedule_replace, backend)
                    return
            ahead = self._ahead(backend)
            if ahead is not None:
                try:
                    backend.send(ahead.inputs)
                except BaseException:  # the worker failed: the receive below says how
                    self._requeue(ahead)
                    ahead = None
            result: dict[str, np.ndarray[Any, Any]] | None = None
            error: BaseException | None = None
            try:
                result = backend.receive()
            except BaseException as exc:
                error = exc
            with self._lock:
                # answered: from now on its deadline must not kill this worker, which may already
                # run the request sent ahead (the loop can see the deadline before the answer)
                job.state, job.answer = _ANSWERED, (result, error)
            serves_on = error is None or (isinstance(error, ModelError) and backend.alive())
            if not serves_on and ahead is not None:
                self._requeue(ahead)  # the worker never got to it
                ahead = None
            if not self._post(loop, self._finish, job, result, error, serves_on) or not serves_on:
                return

    def _finish(
        self, job: _Job, result: dict[str, np.ndarray[Any, Any]] | None, error: BaseException | None,
        serves_on: bool,
    ) -> None:  # fmt: skip
        """On the loop: a job's outcome; a worker that failed is replaced."""
        backend = job.backend
        with self._lock:
            job.state = _DONE
            if job.answer is None:  # it failed before it ran (the send)
                job.answer = (result, error)
        if not serves_on and backend is not None:
            self._schedule_replace(backend)
        if job.future.done():  # the caller timed out (its worker was killed) or went away
            return
        if error is None:
            job.future.set_result(result if result is not None else {})
        else:
            job.future.set_exception(_failure(error))

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

    async def _kill(self, backend: WorkerBackend) -> None:
        await kill_off_loop(self._pool, backend)

    async def _replace(self, dead: WorkerBackend) -> None:
        self._unwatch(dead)
        await self._kill(dead)
        fresh = await start_replacement(self._pool, self._factory, self.closed, self.tenant, self.model)
        if fresh is None:
            return
        self._all = [b for b in self._all if b is not dead] + [fresh]
        self._replacing.discard(dead)
        self.restarted += 1
        self._watch(fresh)
        self._serve(fresh)

    def _schedule_replace(self, dead: WorkerBackend) -> None:
        with self._changed:  # its thread takes no more requests
            self._retired.add(dead)
            self._changed.notify_all()
        if dead in self._replacing or self._closed:
            return  # the watcher and a failed request may both notice the same death
        self._replacing.add(dead)
        task = asyncio.get_running_loop().create_task(self._replace(dead))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def infer(self, inputs: Arrays, deadline: float) -> dict[str, np.ndarray[Any, Any]]:
        """Run one inference on the lane's next free worker before ``deadline`` (loop time)."""
        job = _Job(inputs, asyncio.get_running_loop().create_future())
        with self._changed:
            self._queue.append(job)
            self._changed.notify()
        try:
            async with asyncio.timeout_at(deadline):
                return await job.future
        except TimeoutError as exc:
            with self._lock:
                state, answer = job.state, job.answer
                if state in (_QUEUED, _AHEAD):
                    job.state = _ABANDONED
            if answer is not None:
                # answered as the deadline passed, before the loop had the answer: the caller
                # gets it, and nobody is killed (the worker may run the next request already)
                result, error = answer
                if error is not None:
                    raise _failure(error) from exc
                return result if result is not None else {}
            if state != _RUNNING or job.backend is None:
                raise WorkerTimeout("no worker became free before the deadline") from exc
            # retired now (its thread takes nothing more) and killed off the loop: killing waits
            # for the worker tree to exit, which for a model holding gigabytes took most of a
            # second, and every tenant's requests waited on the loop meanwhile
            self._schedule_replace(job.backend)
            raise WorkerTimeout("the request outlived its deadline; worker killed") from exc
        except asyncio.CancelledError:
            # the client went away: a queued request is dropped; one sent to a worker runs there
            # (the answer is dropped) and the worker serves on
            with self._lock:
                if job.state == _QUEUED:
                    job.state = _ABANDONED
            raise

    async def close(self) -> None:
        self._closed = True
        with self._changed:
            self._changed.notify_all()
        for task in list(self._restarts):
            task.cancel()
        for backend in list(self._all):
            self._unwatch(backend)
        for backend in self._all:
            backend.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
