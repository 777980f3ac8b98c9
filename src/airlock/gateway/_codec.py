"""Per-tenant codec processes: large JSON bodies are parsed, and large replies encoded, off the loop.

``json.loads`` and ``ndarray.tolist`` are C loops that hold the GIL: an 8 MB body costs about a
second, and in a thread of the gateway that second would stall every tenant. So each tenant gets
its own codec process (created on first use, one at a time per tenant): a tenant's large requests
queue behind its own, never behind another tenant's, and the event loop only moves bytes. Small
bodies (``[server] offload_bytes``) and binary tensors (a view of the body, no parsing) stay inline.

The process runs only airlock's own parser over the caller's bytes; what comes back is the request
id, the output choice and each array as (name, dtype string, shape, raw bytes), rebuilt here with
``numpy.frombuffer`` after the same shape/size checks; a BYTES tensor travels as two buffers (u64
end offsets and the elements back to back) and stays so in the gateway (a
:class:`~airlock.sandbox._messages.PackedBytes`, checked with vectorised bounds), framed for the
worker as it is: no step per element in the gateway process. Replies go the same way back. A codec that outlives the request deadline
is killed and replaced at once.

A tenant whose model has a guard gets its codec at start, warmed (:meth:`Codecs.prepare` and
:meth:`Codecs.warm`): building a guard (Presidio) takes seconds, and no request should wait for it.
A warmed codec that is killed at a deadline or dies (its process is watched with a pidfd) is
replaced at once and warmed again, its warm-up queued before any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final

import numpy as np

from airlock.errors import SandboxError
from airlock.gateway._bytes import max_elements
from airlock.gateway._config import TensorSpec
from airlock.gateway._tensors import InferRequest, encode_reply, parse_infer_request
from airlock.sandbox._messages import PackedBytes

__all__ = ["CodecUnavailable", "Codecs"]

_Raw = tuple[str, str, tuple[int, ...], "bytes | tuple[bytes, bytes]"]
_CONTEXT: Final = multiprocessing.get_context("forkserver")
_log = logging.getLogger("airlock.gateway")
#: a call run in a tenant's fresh codec before any request: (function, arguments)
Warmup = tuple[Callable[..., object], tuple[Any, ...]]


class CodecUnavailable(Exception):
    """The tenant's codec process died or outlived the deadline (it is replaced at once)."""


def _flatten_child(inputs: Mapping[str, Any]) -> list[_Raw]:
    """In the codec: each array as raw bytes; a BYTES one as (u64 end offsets, blob): two buffers,
    unpickled in the gateway without a step per element."""
    raw: list[_Raw] = []
    for name, array in inputs.items():
        if array.dtype.kind == "O":
            packed = array if isinstance(array, PackedBytes) else PackedBytes.pack(name, array)
            raw.append((name, "|O", tuple(packed.shape), (packed.ends.tobytes(), packed.blob)))
        else:
            raw.append((name, array.dtype.str, tuple(array.shape), array.tobytes()))
    return raw


def _parse_child(
    body: bytes, declared: Sequence[TensorSpec], header_length: int | None, max_bytes: int | None
) -> tuple[str | None, list[_Raw], tuple[tuple[str, bool], ...], bool, int]:
    request = parse_infer_request(body, declared, header_length, max_bytes)
    return request.id, _flatten_child(request.inputs), request.outputs, request.binary_output, request.nbytes


def _encode_child(
    model: str, reply_id: str, outputs: Mapping[str, Any], binary: frozenset[str]
) -> tuple[list[bytes], int | None]:
    # a BYTES output arrives packed (offsets + blob): its elements are stepped through here only
    chunks, header = encode_reply(model, reply_id, outputs, binary)
    return [bytes(c) for c in chunks], header


def _rebuild(dtype: str, shape: tuple[int, ...], data: object, limit: int) -> Any:
    """An array from the codec's answer, its size checked against its shape; a BYTES one stays
    packed, its offsets checked with vectorised bounds (count from the shape, at most what a body
    of ``limit`` bytes can encode; never backwards; ending at the blob's end) before use."""
    kind = np.dtype(dtype)
    if isinstance(data, tuple):
        if kind.kind != "O" or len(data) != 2 or not all(isinstance(b, bytes) for b in data):
            raise CodecUnavailable("codec returned a BYTES array that does not match its shape")
        try:
            return PackedBytes.checked(tuple(shape), data[0], data[1], max_elements(limit), limit)
        except SandboxError:
            raise CodecUnavailable("codec returned a BYTES array that does not match its shape") from None
    if kind.kind == "O" or not isinstance(data, bytes):
        raise CodecUnavailable("codec returned an object array as a buffer")
    if math.prod(shape) * kind.itemsize != len(data):
        raise CodecUnavailable("codec returned an array whose size does not match its shape")
    return np.frombuffer(data, dtype=kind).reshape(shape)


class Codecs:
    def __init__(self) -> None:
        self._pools: dict[str, ProcessPoolExecutor] = {}
        self._warmups: dict[str, tuple[Warmup, ...]] = {}
        #: pidfds of warmed codecs' processes, watched on the loop
        self._watches: dict[str, list[int]] = {}
        self._closed = False

    def prepare(self, tenant: str, warmups: Sequence[Warmup]) -> None:
        """Calls every codec of ``tenant`` runs first, before any request (building its guards)."""
        self._warmups[tenant] = (*self._warmups.get(tenant, ()), *warmups)

    async def warm(self) -> None:
        """Start the codec of every tenant with warm-up calls, and return once they have run
        (at start, before the gateway listens). A warm-up that fails is logged; the codec serves
        on (its requests build what they need)."""
        loop = asyncio.get_running_loop()
        # one worker per codec, first in first out: the barrier runs after the tenant's warm-ups
        await asyncio.gather(*(loop.run_in_executor(self._pool(t), _barrier) for t in self._warmups))

    def _pool(self, tenant: str) -> ProcessPoolExecutor:
        pool = self._pools.get(tenant)
        if pool is None:
            pool = self._pools[tenant] = ProcessPoolExecutor(max_workers=1, mp_context=_CONTEXT)
            for fn, args in self._warmups.get(tenant, ()):
                # queued first: the process starts now and no request runs before it is warm
                pool.submit(fn, *args).add_done_callback(_ignore)
            if tenant in self._warmups:
                self._watch(tenant, pool)
        return pool

    def _watch(self, tenant: str, pool: ProcessPoolExecutor) -> None:
        """Replace a warmed codec the moment its process exits (killed while idle, say), so the
        next request finds a warm one instead of waiting for the warm-up (a pidfd on the loop)."""
        try:
            loop = asyncio.get_running_loop()
            fds = [os.pidfd_open(pid) for pid in self.pids(tenant)]
        except (RuntimeError, OSError, AttributeError):  # no loop, or no pidfds (Linux < 5.3)
            return
        for fd in fds:
            loop.add_reader(fd, self._exited, tenant, pool)
        self._watches[tenant] = fds

    def _unwatch(self, tenant: str) -> None:
        for fd in self._watches.pop(tenant, []):
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _exited(self, tenant: str, pool: ProcessPoolExecutor) -> None:
        self._unwatch(tenant)
        if self._pools.get(tenant) is pool and not self._closed:
            _log.warning("codec process exited; replaced", extra={"tenant": tenant})
            self._replace(tenant)

    def _replace(self, tenant: str) -> None:
        """Kill the tenant's codec; a warmed one is started again (and warmed) at once."""
        self._discard(tenant)
        if tenant in self._warmups and not self._closed:
            with contextlib.suppress(RuntimeError, OSError):
                self._pool(tenant)

    def pids(self, tenant: str) -> list[int]:
        pool = self._pools.get(tenant)
        processes: Mapping[int, Any] = getattr(pool, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.is_alive()]

    def _discard(self, tenant: str) -> None:
        self._unwatch(tenant)
        pool = self._pools.pop(tenant, None)
        if pool is None:
            return
        processes: Mapping[int, Any] = getattr(pool, "_processes", None) or {}
        for process in list(processes.values()):
            with contextlib.suppress(OSError, ValueError):
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, tenant: str, deadline: float, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._pool(tenant), fn, *args)
        except (BrokenProcessPool, RuntimeError):
            self._replace(tenant)
            future = loop.run_in_executor(self._pool(tenant), fn, *args)
        try:
            async with asyncio.timeout_at(deadline):
                return await future
        except TimeoutError:
            self._replace(tenant)  # a wedged or slow codec is killed, not left to block the tenant
            raise
        except BrokenProcessPool as exc:
            self._replace(tenant)
            raise CodecUnavailable("the codec process died") from exc

    async def run(self, tenant: str, deadline: float, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in the tenant's codec process (a module-level function of airlock's own,
        over the caller's bytes); TimeoutError past ``deadline``, CodecUnavailable when it died."""
        return await self._run(tenant, deadline, fn, *args)

    async def parse(
        self,
        tenant: str,
        body: bytes,
        declared: Sequence[TensorSpec],
        deadline: float,
        max_bytes: int | None = None,
        header_length: int | None = None,
    ) -> InferRequest:
        """The request parsed in the tenant's codec: JSON bodies, and binary ones holding BYTES
        tensors (their elements are split one by one, in Python)."""
        request_id, raw, outputs, binary, nbytes = await self._run(
            tenant, deadline, _parse_child, body, declared, header_length, max_bytes
        )
        inputs = {}
        limit = max_bytes if max_bytes is not None else len(body)
        for name, dtype, shape, data in raw:
            inputs[name] = _rebuild(dtype, shape, data, limit)
        return InferRequest(request_id, inputs, outputs, binary, int(nbytes))

    async def encode(
        self,
        tenant: str,
        model: str,
        reply_id: str,
        outputs: Mapping[str, Any],
        binary: frozenset[str],
        deadline: float,
    ) -> tuple[list[bytes], int | None]:
        # numeric arrays pickle as one buffer, packed BYTES as two: no step per element here
        chunks, header = await self._run(
            tenant, deadline, _encode_child, model, reply_id, dict(outputs), binary
        )
        return list(chunks), header

    def close(self) -> None:
        self._closed = True
        for tenant in list(self._pools):
            self._discard(tenant)


def _barrier() -> None:
    """Run in a codec after its warm-ups: when it returns, they have run."""


def _ignore(done: Any) -> None:
    """A warm-up's outcome: nobody waits for it; a failure is logged (the codec's requests then
    build what they need)."""
    with contextlib.suppress(BaseException):
        if (error := done.exception()) is not None:
            _log.error("codec warm-up failed", extra={"error": type(error).__name__})
