"""Issue 12 (b): one turn of the event loop does a bounded amount of bulk work.

An 8 MiB binary-tensor reply used to be encrypted and sent inside one callback of the loop that
serves every tenant (~5 ms of CPU, 12 ms and more of wall time on a loaded machine). Bodies now
move in slices of at most ``SLICE_BYTES``, metered by one :class:`TurnBudget` per loop, shared by
all connections. The tests assert on the mechanism (bytes per callback, grants per loop
iteration), not on wall-clock time, so they hold on a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import ssl
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from airlock.gateway import Gateway, create_key, dev_certificates, load_config, open_store
from airlock.gateway._pacing import FREE_BYTES, SLICE_BYTES, TURN_BUDGET_SECONDS, Paced, TurnBudget
from tests.gateway import _models
from tests.gateway.conftest import Running, write_config

pytestmark = pytest.mark.xdist_group("pacing")

MAX_BODY = 8 * 1024 * 1024


# -- the budget on a real event loop -------------------------------------------------------------


def test_slice_follows_from_the_stated_turn_budget() -> None:
    # 0.25 ms at ~0.75 ms per MiB is ~350 KiB, rounded down to a power of two
    assert TURN_BUDGET_SECONDS == 0.00025
    assert SLICE_BYTES == 256 * 1024


def test_one_grant_per_loop_iteration_in_arrival_order_however_many_connections_wait() -> None:
    """Six 'connections' each moving 2 MiB: every loop iteration grants one slice, in turn
    (per-connection slicing alone would run six slices in every iteration), and a connection's
    next slice never runs in the callback that ran its last one."""

    async def run() -> tuple[list[tuple[int, int]], int]:
        loop = asyncio.get_running_loop()
        budget = TurnBudget(loop)
        iteration = 0
        done = False

        def tick() -> None:  # counts loop iterations: one call_soon chain, one step each
            nonlocal iteration
            iteration += 1
            if not done:
                loop.call_soon(tick)

        loop.call_soon(tick)
        grants: list[tuple[int, int]] = []

        async def connection(number: int) -> None:
            for _ in range(8):  # 8 slices of 256 KiB
                before = iteration
                await budget.take(SLICE_BYTES)
                assert iteration > before  # always a later turn
                grants.append((iteration, number))

        await asyncio.gather(*(connection(n) for n in range(6)))
        done = True
        return grants, budget.grants

    grants, counted = asyncio.run(run())
    assert len(grants) == counted == 48
    iterations = [iteration for iteration, _ in grants]
    assert len(set(iterations)) == 48, iterations  # one grant per iteration
    assert [number for _, number in grants] == [0, 1, 2, 3, 4, 5] * 8  # round robin


def test_a_cancelled_waiter_does_not_hold_up_the_others() -> None:
    async def run() -> tuple[list[str], bool, int]:
        budget = TurnBudget(asyncio.get_running_loop())
        got: list[str] = []

        async def wait(name: str) -> None:
            await budget.take(SLICE_BYTES)
            got.append(name)

        tasks = [asyncio.create_task(wait(name)) for name in ("first", "cancelled", "third")]
        await asyncio.sleep(0)  # all three are queued; no turn has granted anything yet
        assert got == []
        tasks[1].cancel()
        await asyncio.wait_for(tasks[2], 5)
        return got, tasks[1].cancelled(), budget.grants

    assert asyncio.run(run()) == (["first", "third"], True, 2)


# -- the middleware's slicing, at the sizes around a slice -----------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.takes: list[int] = []


def _run_paced(
    messages: list[dict[str, Any]],
    requests: list[bytes] = (),  # type: ignore[assignment]
    extra_receives: int = 0,
) -> _Recorder:
    recorder = _Recorder()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(len(requests) + extra_receives):
            await receive()
        for message in messages:
            await send(message)

    async def run() -> None:
        paced = Paced(app)
        budget = paced._budget()
        original = budget.take

        async def take(size: int) -> None:
            recorder.takes.append(size)
            await original(size)

        budget.take = take  # type: ignore[method-assign]
        pending = [
            {"type": "http.request", "body": b, "more_body": i < len(requests) - 1}
            for i, b in enumerate(requests)
        ]

        async def receive() -> dict[str, Any]:
            return pending.pop(0) if pending else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            recorder.sent.append(dict(message))

        await paced({"type": "http"}, receive, send)

    asyncio.run(run())
    return recorder


@pytest.mark.parametrize(
    "size",
    [
        FREE_BYTES - 1,
        FREE_BYTES,
        FREE_BYTES + 1,
        SLICE_BYTES - 1,
        SLICE_BYTES,
        SLICE_BYTES + 1,
        2 * MAX_BODY // 3,
    ],
)
@pytest.mark.parametrize("pieces", [1, 3, 40])
def test_bodies_leave_intact_in_slices_of_at_most_slice_bytes(size: int, pieces: int) -> None:
    payload = np.random.default_rng(size + pieces).integers(0, 256, size, dtype=np.uint8).tobytes()
    cuts = [round(size * i / pieces) for i in range(pieces + 1)]
    body = [
        {"type": "http.response.body", "body": payload[a:b], "more_body": True}
        for a, b in itertools.pairwise(cuts)
    ]
    messages = [{"type": "http.response.start", "status": 200, "headers": []}, *body]
    messages.append({"type": "http.response.body", "body": b"", "more_body": False})  # as StreamingResponse
    recorder = _run_paced(messages)
    bodies = [m for m in recorder.sent if m["type"] == "http.response.body"]
    assert b"".join(bytes(m["body"]) for m in bodies) == payload
    assert max(len(m["body"]) for m in bodies) <= SLICE_BYTES
    assert bodies[-1]["more_body"] is False and all(m["more_body"] for m in bodies[:-1])
    # the first FREE_BYTES are free; every later byte was metered, a slice at a time
    assert sum(recorder.takes) == max(0, size - FREE_BYTES)
    assert len(recorder.takes) >= -(-max(0, size - FREE_BYTES) // SLICE_BYTES)


def test_one_whole_body_message_is_cut_too() -> None:
    payload = bytes(range(256)) * (5 * SLICE_BYTES // 256 + 3)
    recorder = _run_paced(
        [
            {"type": "http.response.start", "status": 200, "headers": []},
            {"type": "http.response.body", "body": payload},
        ]
    )
    bodies = [m for m in recorder.sent if m["type"] == "http.response.body"]
    assert len(bodies) == 6 and b"".join(bytes(m["body"]) for m in bodies) == payload
    assert [m["more_body"] for m in bodies] == [True] * 5 + [False]
    assert len(recorder.takes) == 5


def test_request_bodies_are_metered_past_the_free_bytes_and_not_after_their_end() -> None:
    chunk = FREE_BYTES // 2
    recorder = _run_paced(
        [
            {"type": "http.response.start", "status": 200, "headers": []},
            {"type": "http.response.body", "body": b"ok"},
        ],
        [bytes(chunk)] * 10,
        extra_receives=2,  # as StreamingResponse waiting for a disconnect
    )
    # receives 1-2 bring FREE_BYTES; receives 3..10 each wait for a turn's grant; the two after
    # the body's end wait for nothing
    assert recorder.takes == [SLICE_BYTES] * 8


# -- over real HTTP and TLS, with a maximum-size binary reply -------------------------------------


AFFINE = """
[models.affine]
path = "affine.onnx"
runtime = "onnx"
workers = 2
tenants = ["acme", "globex"]
inputs = [{ name = "x", datatype = "FP32", shape = [-1, 4] }]
"""


class _Probe:
    """Bytes handed to TLS per callback of the gateway's loop (its thread only)."""

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.current: list[int] = []
        self.per_callback: list[int] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        run = asyncio.events.Handle._run
        write = asyncio.sslproto.SSLProtocol._write_appdata
        probe = self

        def timed_run(handle: asyncio.Handle) -> None:
            if threading.current_thread() is not probe.thread:
                return run(handle)
            probe.current.append(0)
            try:
                return run(handle)
            finally:
                probe.per_callback.append(probe.current.pop())

        def counted_write(protocol: Any, list_of_data: Any) -> None:
            if threading.current_thread() is probe.thread and probe.current:
                probe.current[-1] += sum(len(data) for data in list_of_data)
            write(protocol, list_of_data)

        monkeypatch.setattr(asyncio.events.Handle, "_run", timed_run)
        monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "_write_appdata", counted_write)


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[tuple[Running, dict[str, str], Path]]:
    _models.affine(tmp_path / "affine.onnx")
    certs = tmp_path / "certs"
    dev_certificates(certs, ["127.0.0.1"])
    tls = f'\n[tls]\ncert = "{certs / "server.pem"}"\nkey = "{certs / "server.key"}"\n'
    config = load_config(
        write_config(
            tmp_path, AFFINE + tls, server=f"max_body_bytes = {MAX_BODY}\nrequest_timeout_seconds = 60\n"
        )
    )
    store = open_store(config)
    tokens = {}
    for tenant in ("acme", "globex"):
        store.add_tenant(tenant, None)
        tokens[tenant] = create_key(store, tenant)[1]
    store.close()
    running = Running(Gateway(config))
    try:
        yield running, tokens, certs / "ca.pem"
    finally:
        running.stop()


def _binary_request() -> tuple[bytes, int, bytes]:
    """A maximum-size binary request whose reply is known exactly: one-hot rows (and zero rows)
    make each output row a single float32 addition, W[i] + b (or b), whatever the summation order."""
    rows = (MAX_BODY - 4096) // 16
    x = np.zeros((rows, 4), dtype=np.float32)
    hot = np.arange(rows) % 5  # 4: a zero row
    x[hot < 4, hot[hot < 4]] = 1.0
    table = np.vstack([_models.AFFINE_W + _models.AFFINE_B, _models.AFFINE_B[None, :]]).astype(np.float32)
    expected = table[hot].astype(np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [rows, 4],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + x.tobytes(), len(header), expected


def test_a_maximum_size_binary_reply_leaves_in_bounded_steps_over_tls(
    tls_gateway: tuple[Running, dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenant A streams ~6 MiB binary replies on two connections while B sends small requests:
    no callback of the gateway's loop hands TLS more than one slice (the old code wrote each whole
    reply in one callback), every slice past the first was metered, and A's bytes arrive intact."""
    running, tokens, ca = tls_gateway
    body, header_length, expected = _binary_request()
    probe = _Probe(running.thread)
    probe.install(monkeypatch)
    state = running.gateway.state
    assert state is not None and state.pacing is not None
    context = ssl.create_default_context(cafile=str(ca))
    url = f"https://127.0.0.1:{running.gateway.port}/v2/models/affine/infer"
    digests: list[str] = []
    statuses: list[int] = []
    flooding = threading.Event()
    flooding.set()

    def tenant_a() -> None:
        headers = {
            "Authorization": f"Bearer {tokens['acme']}",
            "Inference-Header-Content-Length": str(header_length),
        }
        with httpx.Client(verify=context, timeout=60) as a:
            for _ in range(2):
                reply = a.post(url, content=body, headers=headers)
                statuses.append(reply.status_code)
                digests.append(
                    hashlib.sha256(
                        reply.content[int(reply.headers["inference-header-content-length"]) :]
                    ).hexdigest()
                )

    def tenant_b() -> None:
        small = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        with httpx.Client(
            verify=context, timeout=60, headers={"Authorization": f"Bearer {tokens['globex']}"}
        ) as b:
            while flooding.is_set():
                statuses.append(b.post(url, json=small).status_code)

    before = state.pacing.budget.grants if state.pacing.budget is not None else 0
    helper = threading.Thread(target=tenant_b)
    helper.start()
    threads = [threading.Thread(target=tenant_a) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    finally:
        flooding.clear()
        helper.join(60)
    assert statuses and set(statuses) == {200}, statuses
    assert digests == [hashlib.sha256(expected).hexdigest()] * 4
    # a reply's head (coalesced, small) may share a callback with its first slice
    largest = max(probe.per_callback)
    assert largest <= SLICE_BYTES + 4096, f"one callback handed TLS {largest} bytes"
    assert sum(probe.per_callback) >= 4 * len(expected)
    # 4 requests of ~8 MiB in and 4 replies of ~6 MiB out: all but each body's first slice metered
    assert state.pacing.budget is not None
    metered = state.pacing.budget.grants - before
    assert metered >= 4 * (len(body) + len(expected)) // SLICE_BYTES - 16, metered
