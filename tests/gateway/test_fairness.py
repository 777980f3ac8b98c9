"""Issue 12 (b) and issue 15's follow-up, over real HTTP against real sandboxed workers.

* Tenant B's small requests stay fast while tenant A sends back-to-back maximum-size requests:
  A's parsing and encoding run in A's own codec process, never on the event loop.
* A tenant with a guarded model gets its codec at start with the guards already built (building one
  takes seconds: Presidio), and a codec killed at a deadline is replaced, warmed, at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airlock.gateway import Gateway, create_key, load_config, open_store
from airlock.gateway._text_guard import built_guards
from tests.gateway import _models
from tests.gateway.conftest import Running, write_config
from tests.gateway.test_bytes_e2e import _shout

pytestmark = pytest.mark.xdist_group("fairness")

MAX_BODY = 8 * 1024 * 1024
AFFINE = """
[models.affine]
path = "affine.onnx"
runtime = "onnx"
tenants = ["acme", "globex"]
inputs = [{ name = "x", datatype = "FP32", shape = [-1, 4] }]
"""
GUARDED = """
[models.shout]
path = "shout.onnx"
runtime = "onnx"
tenants = ["acme"]
inputs = [{ name = "x", datatype = "BYTES", shape = [-1] }]
[models.shout.guard.input]
pii = "redact"
"""
SMALL = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


class _Served:
    def __init__(self, folder: Path, models: str, server: str) -> None:
        _models.affine(folder / "affine.onnx")
        _shout(folder / "shout.onnx")
        config = load_config(write_config(folder, models, server=server))
        store = open_store(config)
        self.tokens = {}
        for tenant in ("acme", "globex"):
            store.add_tenant(tenant, None)
            self.tokens[tenant] = create_key(store, tenant)[1]
        store.close()
        self.running = Running(Gateway(config))
        self.state = self.running.gateway.state
        assert self.state is not None
        self.url = f"http://127.0.0.1:{self.running.gateway.port}"

    def client(self, tenant: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[tenant]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    started: list[_Served] = []

    def make(models: str, server: str) -> _Served:
        started.append(_Served(tmp_path, models, server))
        return started[-1]

    yield make
    for one in started:
        one.running.stop()


def _latencies(client: httpx.Client, seconds: float) -> list[float]:
    samples: list[float] = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        started = time.perf_counter()
        assert client.post("/v2/models/affine/infer", json=SMALL).status_code == 200
        samples.append(time.perf_counter() - started)
        time.sleep(0.005)
    return samples


def test_tenant_b_stays_fast_while_tenant_a_sends_maximum_size_json(served: Any) -> None:
    """A sends 8 MB JSON bodies back to back on two connections: each costs seconds of parsing and
    of encoding its reply (measured ~1.2 s + ~1.1 s). Parsed or encoded on the event loop, they held
    every tenant's requests for that long (B's p90 was seconds); in A's own
    codec process B's p90 stays within tens of milliseconds. The bound
    is >10x what B sees on a loaded 2-core machine, and well below what a loop held by A's bodies
    gives."""
    gateway = served(AFFINE, f"max_body_bytes = {MAX_BODY}\nrequest_timeout_seconds = 60\n")
    row = "[1.5,2.25,3.125,4.0625],"
    rows = (MAX_BODY - 200) // len(row)
    big = (
        f'{{"inputs":[{{"name":"x","datatype":"FP32","shape":[{rows},4],"data":[{(row * rows)[:-1]}]}}]}}'
    ).encode()
    with gateway.client("globex") as b:
        alone = _latencies(b, 1.5)
        statuses: list[int] = []
        flooding = threading.Event()
        flooding.set()

        def tenant_a() -> None:
            with gateway.client("acme") as a:
                while flooding.is_set():
                    reply = a.post("/v2/models/affine/infer", content=big)
                    statuses.append(reply.status_code)

        threads = [threading.Thread(target=tenant_a) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 30
            while not gateway.state.codecs.pids("acme") and time.monotonic() < deadline:
                time.sleep(0.05)  # A's first body is being parsed in its codec
            loaded = _latencies(b, 6.0)
        finally:
            flooding.clear()
            for thread in threads:
                thread.join(120)
    assert statuses and set(statuses) == {200}, statuses  # A is served too, only not at B's cost
    # the 90th percentile: B's requests made between two of A's bodies are fast either way; one
    # that arrives while A's body holds the loop waits for all of it (measured on loop: p90 2.3 s,
    # max 3.3 s, 11 answers in 6 s; in the codec: p90 37 ms, max 0.19 s, 175 answers)
    p90 = sorted(loaded)[int(0.9 * len(loaded))]
    assert p90 < 0.5, (
        f"B's p90 {p90 * 1000:.0f} ms under A's flood ({len(loaded)} answers; "
        f"alone: median {statistics.median(alone) * 1000:.1f} ms)"
    )


def test_a_guarded_tenants_codec_is_warm_before_the_first_request(served: Any) -> None:
    """Building a guard takes seconds (Presidio loads); the first request whose texts were checked
    in the tenant's codec paid it (~3 s, past many deadlines). The codec is started at start-up
    and builds the tenant's guards before the gateway listens, so no request waits for it."""
    gateway = served(GUARDED, "offload_bytes = 1024\nrequest_timeout_seconds = 20\n")
    (codec,) = gateway.state.codecs.pids("acme")  # there before any request
    held = gateway.running.call(gateway.state.codecs.run("acme", _far(gateway), built_guards))
    assert held == ["shout/input"]
    items = [f"mail u{i}@example.com" for i in range(60)]  # past offload_bytes: checked in the codec
    with gateway.client("acme") as client:
        started = time.perf_counter()
        reply = client.post(
            "/v2/models/shout/infer",
            json={"inputs": [{"name": "x", "datatype": "BYTES", "shape": [60], "data": items}]},
        )
        elapsed = time.perf_counter() - started
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["data"] == ["mail <EMAIL_ADDRESS>!"] * 60
    assert gateway.state.codecs.pids("acme") == [codec]  # the same, warm process did the work
    assert elapsed < 2.0, f"the first checked request took {elapsed:.2f} s"


def test_a_codec_killed_at_a_deadline_is_replaced_warm_at_once(served: Any) -> None:
    """A codec that outlives a request's deadline is killed; its replacement starts at once and
    builds the guards before it takes any request (not when the next request needs it)."""
    gateway = served(GUARDED, "offload_bytes = 1024\nrequest_timeout_seconds = 2.0\n")
    (codec,) = gateway.state.codecs.pids("acme")
    os.kill(codec, signal.SIGSTOP)  # wedged: the next checked request meets its deadline
    items = [f"mail u{i}@example.com" for i in range(60)]
    try:
        with gateway.client("acme") as client:
            reply = client.post(
                "/v2/models/shout/infer",
                json={"inputs": [{"name": "x", "datatype": "BYTES", "shape": [60], "data": items}]},
            )
        assert reply.status_code == 504
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed at the deadline and reaped already
            os.kill(codec, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # no request is made meanwhile: only an eager restart starts one
        fresh = gateway.state.codecs.pids("acme")
        if fresh and fresh != [codec]:
            break
        time.sleep(0.05)
    assert fresh and fresh != [codec]
    held = gateway.running.call(gateway.state.codecs.run("acme", _far(gateway), built_guards), timeout=60)
    assert held == ["shout/input"]


def test_a_codec_that_dies_while_idle_is_replaced_warm_at_once(served: Any) -> None:
    """A warmed codec killed from outside while idle (the OOM killer, an operator) is noticed at
    once (a pidfd on the loop) and replaced, warmed, with no request made: the next request does
    not meet a dead codec (a 503) nor wait for the warm-up."""
    gateway = served(GUARDED, "offload_bytes = 1024\nrequest_timeout_seconds = 20\n")
    (codec,) = gateway.state.codecs.pids("acme")
    os.kill(codec, signal.SIGKILL)
    deadline = time.monotonic() + 30
    fresh: list[int] = []
    while time.monotonic() < deadline:
        fresh = gateway.state.codecs.pids("acme")
        if fresh and fresh != [codec]:
            break
        time.sleep(0.05)
    assert fresh and fresh != [codec]
    held = gateway.running.call(gateway.state.codecs.run("acme", _far(gateway), built_guards), timeout=60)
    assert held == ["shout/input"]
    items = [f"mail u{i}@example.com" for i in range(60)]
    with gateway.client("acme") as client:
        reply = client.post(
            "/v2/models/shout/infer",
            json={"inputs": [{"name": "x", "datatype": "BYTES", "shape": [60], "data": items}]},
        )
    assert reply.status_code == 200, reply.text
    assert gateway.state.codecs.pids("acme") == fresh


def _far(gateway: _Served) -> float:
    """A codec deadline 50 s ahead, on the gateway loop's clock (monotonic, like the loop's)."""
    return time.monotonic() + 50
