"""Calling the state and the budgets from the event loop without blocking it.

The embedded backends (SQLite, in-process buckets) answer in microseconds and are called inline,
as before. A server backend (PostgreSQL, Redis: an object with a ``backend`` attribute, a
:class:`._backend.Backend`) is called in that backend's own threads, and the loop only awaits the
answer, at most ``call_timeout`` seconds: a server that stops answering (a dead host, a network
partition, a stopped process that still holds its sockets) holds up only the requests waiting for
it, never the loop and the other tenants. A call past its time is the server's failure: it is
marked down (then calls fail at once until its watch reaches it again) and the request gets
:class:`BackendUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from airlock.gateway._backend import Backend, BackendUnavailable

__all__ = ["background", "offload"]

_T = TypeVar("_T")


def _backend(owner: object) -> Backend | None:
    backend = getattr(owner, "backend", None)
    return backend if isinstance(backend, Backend) else None


async def offload(owner: object, call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)``: inline for an embedded backend, in ``owner``'s threads for a server."""
    backend = _backend(owner)
    if backend is None:
        return call(*args)
    backend.check()  # down: refuse at once, no thread taken
    loop = asyncio.get_running_loop()
    try:
        future = loop.run_in_executor(backend.executor, functools.partial(call, *args))
        return await asyncio.wait_for(future, backend.call_timeout)
    except TimeoutError:
        raise backend.failed(TimeoutError("no answer in time")) from None
    except RuntimeError as exc:  # the executor was shut down (the gateway is stopping)
        raise BackendUnavailable(f"{backend.what} closed") from exc


def _swallow(done: Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        done.result()


def background(owner: object, call: Callable[..., object], *args: Any) -> None:
    """``call(*args)`` whose answer nobody waits for (giving a slot back): inline for an embedded
    backend, queued to ``owner``'s threads for a server (failures are the backend's to log)."""
    backend = _backend(owner)
    if backend is None:
        call(*args)
        return
    with contextlib.suppress(RuntimeError):  # shut down: the tickets expire by themselves
        backend.executor.submit(call, *args).add_done_callback(_swallow)
