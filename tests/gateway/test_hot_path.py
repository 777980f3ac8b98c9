"""What the per-request fast paths keep: cached keys and tenants never outlive a change made by
another connection or by the store itself, and the cheaper audit MAC and log lines are byte for
byte what they were."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.gateway import TenantLimits, create_key
from airlock.gateway._audit import chain_hash
from airlock.gateway._keys import authenticate
from airlock.gateway._observe import MAX_FIELD, JsonFormatter
from airlock.gateway._sqlite_store import SqliteStore
from tests.gateway.test_hardening import _Gateway


def _stores(tmp_path: Path) -> tuple[SqliteStore, SqliteStore]:
    """The gateway's connection and a second one to the same file (as ``airlock key revoke`` opens)."""
    gateway = SqliteStore(tmp_path / "state.db", b"k" * 32)
    return gateway, SqliteStore(tmp_path / "state.db")


def test_a_key_revoked_by_another_connection_is_refused_at_the_next_request(tmp_path: Path) -> None:
    gateway, cli = _stores(tmp_path)
    gateway.add_tenant("acme", TenantLimits(10, 10, 1))
    record, token = create_key(gateway, "acme")
    header = f"Bearer {token}"
    for _ in range(3):  # now held in memory
        assert authenticate(gateway, header) is not None
    assert cli.revoke_key(record.key_id, 1.0)
    assert authenticate(gateway, header) is None
    # and a key created elsewhere is known at once
    _, other = create_key(cli, "acme")
    assert authenticate(gateway, f"Bearer {other}") is not None


def test_the_stores_own_writes_are_seen_at_once(tmp_path: Path) -> None:
    gateway, _ = _stores(tmp_path)
    gateway.add_tenant("acme", TenantLimits(10, 10, 1))
    record, token = create_key(gateway, "acme")
    assert authenticate(gateway, f"Bearer {token}") is not None
    assert gateway.revoke_key(record.key_id, 1.0)
    assert authenticate(gateway, f"Bearer {token}") is None


def test_tenants_appear_and_records_are_fresh_after_another_connection_writes(tmp_path: Path) -> None:
    gateway, cli = _stores(tmp_path)
    assert gateway.tenant("late") is None
    cli.add_tenant("late", TenantLimits(5, 6, 7))
    tenant = gateway.tenant("late")
    assert tenant is not None and tenant.limits == TenantLimits(5, 6, 7)
    assert gateway.tenant("late") == tenant


def test_unknown_key_ids_are_not_remembered(tmp_path: Path) -> None:
    gateway, _ = _stores(tmp_path)
    gateway.add_tenant("acme", TenantLimits(10, 10, 1))
    _, token = create_key(gateway, "acme")
    assert authenticate(gateway, f"Bearer {token}") is not None
    for _ in range(500):
        forged = f"alk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
        assert authenticate(gateway, f"Bearer {forged}") is None
    assert len(gateway._keys) == 1  # only the key that exists; a stranger cannot grow the cache


def test_a_cached_key_still_needs_the_right_secret(tmp_path: Path) -> None:
    gateway, _ = _stores(tmp_path)
    gateway.add_tenant("acme", TenantLimits(10, 10, 1))
    _, token = create_key(gateway, "acme")
    assert authenticate(gateway, f"Bearer {token}") is not None
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")  # same key id, other secret
    assert authenticate(gateway, f"Bearer {wrong}") is None


def _reference_mac(key: bytes, prev: str, *fields: object) -> str:
    body = json.dumps(
        [fields[0], repr(fields[1]), *fields[2:]], separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")
    return hmac.new(key, prev.encode("ascii") + b"\n" + body, hashlib.sha256).hexdigest()


def test_the_audit_mac_is_the_documented_hmac() -> None:
    key = bytes(range(32))
    for fields in [
        (1, 1700000000.123456, "acme", "0123456789abcdef", "affine", "d" * 64, "r" * 32, "started", 0),
        (2**40, 0.1, 'quote"back\\slash', "", "", "", "", "failed:internal", 500),
        (7, 1e-7, "ünï\u2028code\x00", "k", "m", "", "id", "allowed", 200),
    ]:
        assert chain_hash(key, "ab" * 32, *fields) == _reference_mac(key, "ab" * 32, *fields)


def test_log_lines_keep_their_fields_order_and_bounds() -> None:
    record = logging.LogRecord("airlock.gateway", logging.INFO, "f.py", 1, "infer", (), None)
    record.created = 1700000000.1234567
    extra = {"request_id": "r" * 32, "tenant": "acme", "status": 200, "ms": 1.5, "ok": True,
             "none": None, "long": "x" * (MAX_FIELD + 1), "path": Path("/p"), "_private": 1}  # fmt: skip
    record.__dict__.update(extra)
    line = JsonFormatter().format(record)
    assert json.loads(line) == {
        "time": 1700000000.123457, "level": "info", "logger": "airlock.gateway", "message": "infer",
        "request_id": "r" * 32, "tenant": "acme", "status": 200, "ms": 1.5, "ok": True, "none": None,
        "long": "x" * MAX_FIELD + "...[truncated]", "path": "/p",
    }  # fmt: skip
    assert line.index('"request_id"') < line.index('"tenant"') < line.index('"long"')
    assert line.isascii() and "\n" not in line


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[_Gateway]:
    slow = '\n[models.slow]\npath = "slow.onnx"\nruntime = "onnx"\ntenants = ["acme"]\nworkers = 1\n'
    running = _Gateway(tmp_path, "request_timeout_seconds = 60\n", slow)
    yield running
    running.stop()


def _slow(rows: int) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
                       {"name": "shape", "datatype": "INT64", "shape": [2], "data": [rows, 1024]}]}  # fmt: skip


def _until(condition: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.002)


def test_a_request_sent_ahead_to_a_worker_that_dies_is_served_by_its_replacement(gateway: _Gateway) -> None:
    """While a worker runs one request, the next small one is already sent to it; when the worker
    dies, that one never ran: it goes back to the queue and the replacement serves it (a 200),
    while the request that was running gets the 503."""
    state = gateway.running.gateway.state
    assert state is not None
    lane = state.lanes[("acme", "slow")]
    results: dict[str, int] = {}

    def call(name: str, rows: int) -> None:
        with gateway.client("acme") as client:
            results[name] = client.post("/v2/models/slow/infer", json=_slow(rows), timeout=60).status_code

    first = threading.Thread(target=call, args=("first", 256))
    first.start()
    _until(lambda: lane.dispatched == 1)
    running = threading.Thread(target=call, args=("running", 4096))  # minutes of work: killed first
    running.start()
    _until(lambda: len(lane._queue) == 1)
    ahead = threading.Thread(target=call, args=("ahead", 1))
    ahead.start()
    _until(lambda: len(lane._queue) == 2)
    # "first" answers; its thread sends "running", then "ahead" behind it, at once
    _until(lambda: lane.dispatched == 3)
    assert not lane._queue
    pid = lane.pids()[0]
    time.sleep(0.05)
    os.killpg(pid, signal.SIGKILL)  # as the OOM killer would, while "running" runs
    for thread in (first, running, ahead):
        thread.join(60)
    assert results == {"first": 200, "running": 503, "ahead": 200}
    assert lane.dispatched == 4  # "ahead" was handed out twice, and ran once


def test_requests_sent_ahead_keep_their_order_and_answers(gateway: _Gateway) -> None:
    """Many small requests on one worker: each caller gets the answer to its own request."""
    results: dict[int, float] = {}

    def call(rows: int) -> None:
        body = _slow(1)
        body["inputs"][0]["data"] = [float(rows)]
        with gateway.client("acme") as client:
            reply = client.post("/v2/models/slow/infer", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        results[rows] = reply.json()["outputs"][0]["data"][0]

    threads = [threading.Thread(target=call, args=(n,)) for n in range(1, 9)]  # the tenant's cap is 8
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # y = sum(x * 0.5**120 * ...) is proportional to x: the ratios give each caller's own x back
    assert sorted(results) == list(range(1, 9))
    assert all(results[n] == pytest.approx(n * results[1], rel=1e-5) for n in results)


def test_a_worker_thread_that_fails_gets_its_worker_replaced(gateway: _Gateway) -> None:
    """Whatever breaks a worker's thread, its worker is replaced and the request it was about to
    take is served by the replacement, not left queued until its deadline."""
    state = gateway.running.gateway.state
    assert state is not None
    lane = state.lanes[("acme", "slow")]
    backend = lane._all[0]
    real = backend.alive

    def alive() -> bool:
        if threading.current_thread().name.startswith("lane-"):
            raise RuntimeError("injected")  # the thread's own check, before it takes a request
        return bool(real())

    backend.alive = alive  # type: ignore[method-assign]
    with gateway.client("acme") as client:
        reply = client.post("/v2/models/slow/infer", json=_slow(1), timeout=60)
    assert reply.status_code == 200, reply.text
    assert lane.restarted == 1
    assert backend not in lane._all
