"""Attacks on the lanes' worker threads, send-ahead and replacement (the gw-speed change), over
real HTTP against a real gateway with real sandboxed workers."""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.test_hardening import BODY, _Gateway


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
