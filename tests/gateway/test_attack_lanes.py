"""Attacks on the lanes' worker threads, send-ahead and replacement (the gw-speed change), over
real HTTP against a real gateway with real sandboxed workers."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.test_hardening import AFFINE, BODY, _Gateway


def _until(condition: Any, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[_Gateway]:
    running = _Gateway(tmp_path, "request_timeout_seconds = 3\n")
    yield running
    running.stop()


def test_every_replacement_worker_is_served_however_often_workers_die(gateway: _Gateway) -> None:
    """A lane remembered the workers it retired by ``id()``. Once a dead worker object is freed,
    CPython hands its address (its id) to a new object: a later replacement with that id was
    taken for retired, its thread returned at once, and the live, "ready" worker never served a
    request again (every request of the lane queued until its deadline: 504, no replacement).
    A tenant whose model dies on some input could do this to its own lane at will; the OOM
    killer does it to anyone. Each replacement must serve."""
    state = gateway.running.gateway.state
    assert state is not None
    lane = state.lanes[("acme", "affine")]
    with gateway.client("acme") as client:
        assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
        for round_ in range(48):
            restarted = lane.restarted
            os.killpg(lane.pids()[0], signal.SIGKILL)
            _until(lambda restarted=restarted: lane.restarted == restarted + 1 and lane.pids())
            started = time.monotonic()
            reply = client.post("/v2/models/affine/infer", json=BODY)
            assert reply.status_code == 200, (round_, reply.status_code, time.monotonic() - started)
            # the dead worker object is freed now, its address at the head of the free list when
            # the next kill makes the lane allocate a replacement
            gc.collect()


SLOW = '\n[models.slow]\npath = "slow.onnx"\nruntime = "onnx"\ntenants = ["acme"]\nworkers = 1\n'


def test_killing_a_timed_out_worker_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    """A tenant's request that outlives its deadline gets its worker killed. The kill ran on the
    event loop and waits for the worker tree to exit; a model holding ~3 GB (well inside the
    sandbox's memory limit) took ~0.85 s to exit, and every tenant's requests waited meanwhile.
    The loop's lag while that worker is killed (measured on the gateway's own loop) stays small."""
    gateway = _Gateway(tmp_path, "request_timeout_seconds = 4\n", AFFINE + SLOW)
    try:
        loop = gateway.running.loop
        lags: list[float] = []

        async def monitor() -> None:
            while True:
                before = loop.time()
                await asyncio.sleep(0.005)
                lags.append(loop.time() - before - 0.005)

        watcher = asyncio.run_coroutine_threadsafe(monitor(), loop)
        # 400000 x 1024 FP32 = 1.6 GB per intermediate: minutes of work, never finished in 4 s
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
                           {"name": "shape", "datatype": "INT64", "shape": [2], "data": [400000, 1024]}]}  # fmt: skip
        with gateway.client("acme") as client:
            assert client.post("/v2/models/slow/infer", json=body, timeout=30).status_code == 504
        time.sleep(1.0)  # the kill, off the loop or on it, is over
        watcher.cancel()
        with gateway.client("globex") as client:  # the other tenant is served
            assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
        assert max(lags) < 0.2, sorted(lags)[-3:]  # fixed: ~0.04 s; before: 0.35-0.85 s
    finally:
        gateway.stop()


def _slow(rows: int) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
                       {"name": "shape", "datatype": "INT64", "shape": [2], "data": [rows, 1024]}]}  # fmt: skip


def test_a_small_request_is_not_held_behind_a_long_one_while_another_worker_idles(tmp_path: Path) -> None:
    """Two workers, both busy; the queue holds a long request L, then a small one X. The first
    worker to free up takes L and, every worker being busy at that instant, sends X ahead to
    itself: X then waits for all of L although the second worker frees up a moment later and
    idles. X should be served by the idle worker long before L ends."""
    slow = SLOW.replace("workers = 1", "workers = 2")
    gateway = _Gateway(tmp_path, "request_timeout_seconds = 120\n", AFFINE + slow)
    try:
        state = gateway.running.gateway.state
        assert state is not None
        lane = state.lanes[("acme", "slow")]
        took: dict[str, float] = {}

        def call(name: str, rows: int) -> None:
            started = time.monotonic()
            with gateway.client("acme") as client:
                reply = client.post("/v2/models/slow/infer", json=_slow(rows), timeout=120)
            assert reply.status_code == 200, reply.text
            took[name] = time.monotonic() - started

        threads = [threading.Thread(target=call, args=(f"busy{n}", 384)) for n in range(2)]
        for thread in threads:
            thread.start()
        _until(lambda: lane.dispatched == 2)
        threads.append(threading.Thread(target=call, args=("long", 1536)))
        threads[-1].start()
        _until(lambda: len(lane._queue) == 1)
        threads.append(threading.Thread(target=call, args=("small", 1)))
        threads[-1].start()
        _until(lambda: len(lane._queue) == 2)
        for thread in threads:
            thread.join(150)
        assert set(took) == {"busy0", "busy1", "long", "small"}
        # served by the worker that idles once its "busy" request is done, not behind "long"
        assert took["small"] < took["long"] / 2, took
    finally:
        gateway.stop()
