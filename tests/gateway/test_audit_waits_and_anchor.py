"""The audit log under a locked store, and the recorded head as an anchor (issue 12, F6 and F7).

A commit that waits for another process's lock holds up only the requests whose rows it carries
(refused with the audit 503 at their deadline; the model never runs for them) while readiness says
the store is not writable; the recorded head only moves forward along the chain it names, so rows
cut or replaced under a running gateway stay reported and the next start refuses. Real gateways,
real HTTP, a real second process holding the SQLite lock; every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from airlock._cli import main
from airlock.errors import UsageError
from airlock.gateway import Gateway
from airlock.gateway._audit import GENESIS, AuditHead, advance, chain_hash
from airlock.gateway._store import AuditRow
from tests.gateway.conftest import Running
from tests.gateway.test_hardening import BODY, _worker_calls, make_gateway

__all__ = ["make_gateway"]  # a fixture, imported for pytest

pytestmark = pytest.mark.xdist_group("audit_waits")

AUDIT_503 = {"error": "audit log unavailable; the request was not served"}


def _hold_lock(state: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the state database's write lock (BEGIN IMMEDIATE) for ``seconds``."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"db = sqlite3.connect({str(state)!r}, isolation_level=None)\n"
         f"db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep({seconds}); db.execute('ROLLBACK')\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics")


def test_a_locked_store_refuses_only_the_waiting_request_at_its_deadline_and_readiness_says_so(
    make_gateway: Any, tmp_path: Path
) -> None:
    """The lock outlives the request's deadline (1.5 s): that request gets the audit 503 at about
    its deadline (not after SQLite's 10 s busy timeout, not after the lock's 5 s), the model never
    runs for it, readiness and the ``airlock_audit_writable`` gauge say the store takes no rows
    while the commit is stalled, probes and metrics answer at once; once the lock is gone the
    gateway is ready again and serves, and the chain verifies."""
    gateway = make_gateway()
    admin = gateway.running.gateway.admin_port
    with gateway.client("acme") as client:
        assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
    calls = _worker_calls(admin)
    holder = _hold_lock(gateway.config.server.state, 5.0)
    locked_at = time.monotonic()
    try:
        outcome: dict[str, Any] = {}

        def call() -> None:
            started = time.monotonic()
            with gateway.client("acme") as client:
                reply = client.post("/v2/models/affine/infer", json=BODY)
            outcome.update(status=reply.status_code, body=reply.json(), seconds=time.monotonic() - started)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        ready, slowest = 200, 0.0
        while time.monotonic() - locked_at < 4.5 and ready == 200:
            started = time.monotonic()
            assert httpx.get(f"{gateway.url}/v2/health/live", timeout=10).status_code == 200
            ready = httpx.get(f"{gateway.url}/v2/health/ready", timeout=10).status_code
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
        assert ready == 503, "readiness never said the store takes no rows while its commit was stalled"
        assert _gauge(gateway.metrics(), "airlock_audit_writable") == 0.0
        caller.join(15)
        assert outcome["status"] == 503 and outcome["body"] == AUDIT_503, outcome
        assert 1.0 < outcome["seconds"] < 4.0, f"refused after {outcome['seconds']:.1f} s (deadline 1.5 s)"
        assert _worker_calls(admin) == calls  # the model never ran for it
        assert slowest < 1.0, f"a probe took {slowest:.1f} s while the store was locked"
    finally:
        holder.wait(30)
    deadline = time.monotonic() + 15
    while httpx.get(f"{gateway.url}/v2/health/ready", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "readiness never came back after the lock was released"
        time.sleep(0.1)
    assert _gauge(gateway.metrics(), "airlock_audit_writable") == 1.0
    with gateway.client("acme") as client:
        assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
    assert main(["audit", "verify", "--config", str(gateway.config.source)]) == 0


def test_rows_replaced_under_a_running_gateway_are_reported_and_refuse_the_next_start(
    make_gateway: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cut rows 7-10 under a running gateway, let new calls refill seq 7-12: the head file keeps seq
    10 with its MAC (byte for byte), readiness and ``airlock_audit_chain_intact`` report the break,
    verify exits 1 naming the replaced row, and a new gateway on that state refuses to start (the
    head file still unchanged)."""
    import sqlite3

    gateway = make_gateway(extra="[audit]\nhead_interval_seconds = 0.1\n")
    head_file = gateway.config.audit.head_file
    with gateway.client("acme") as client:
        for _ in range(5):
            assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
        deadline = time.monotonic() + 15
        while json.loads(head_file.read_text())["seq"] != 10:
            assert time.monotonic() < deadline, "the head file never reached seq 10"
            time.sleep(0.05)
        recorded = head_file.read_bytes()
        db = sqlite3.connect(gateway.config.server.state)
        db.execute("DELETE FROM audit WHERE seq > 6")
        db.commit()
        db.close()
        for _ in range(3):
            assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
    deadline = time.monotonic() + 15
    while httpx.get(f"{gateway.url}/v2/health/ready", timeout=10).status_code != 503:
        assert time.monotonic() < deadline, "readiness never reported the broken chain"
        time.sleep(0.05)
    assert _gauge(gateway.metrics(), "airlock_audit_chain_intact") == 0.0
    time.sleep(0.5)  # several head intervals
    assert head_file.read_bytes() == recorded
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(gateway.config.source)]) == 1
    assert "row seq 10: differs from the recorded head" in capsys.readouterr().out
    gateway.stop()
    assert head_file.read_bytes() == recorded  # nor at shutdown
    with pytest.raises(UsageError, match=r"seq 10.*carries another MAC"):
        Running(Gateway(gateway.config))
    assert head_file.read_bytes() == recorded


def test_a_start_without_a_head_file_refuses_a_key_the_log_was_not_written_with(make_gateway: Any) -> None:
    """A new replica of a shared store (no head file yet) whose [audit] key_file holds another key
    used to start and append rows under it: every one of them broke the chain all replicas share.
    Now the log's last row must carry this key's MAC; with the right key the start goes on."""
    gateway = make_gateway()
    with gateway.client("acme") as client:
        assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
    gateway.stop()
    config = gateway.config
    right = config.audit.key_file.read_bytes()
    config.audit.head_file.unlink()
    config.audit.key_file.write_text("ab" * 32 + "\n", encoding="ascii")  # another valid key
    with pytest.raises(UsageError, match=r"last row \(seq 2\) does not carry this \[audit\] key_file's MAC"):
        Running(Gateway(config))
    assert not config.audit.head_file.exists()  # nothing recorded under the wrong key
    config.audit.key_file.write_bytes(right)
    again = Running(Gateway(config))  # the right key: the log's end is recorded as it is
    try:
        assert json.loads(config.audit.head_file.read_text())["seq"] == 2
    finally:
        again.stop()
    assert main(["audit", "verify", "--config", str(config.source)]) == 0


# the anchor rule, row by row -----------------------------------------------------------------

KEY = bytes(range(32))


def _chain(count: int, start: int = 1, prev: str = GENESIS, marker: str = "r") -> list[AuditRow]:
    rows = []
    for seq in range(start, start + count):
        fields = (float(seq), "acme", "k", "m", "d", f"{marker}{seq}", "allowed", 200)
        mac = chain_hash(KEY, prev, seq, *fields)
        rows.append(AuditRow(seq, *fields, prev, mac))
        prev = mac
    return rows


def _at(rows: list[AuditRow], seq: int) -> AuditHead:
    row = next(r for r in rows if r.seq == seq)
    return AuditHead(seq, row.row_hash, 0.0)


def test_advance_moves_only_forward_along_the_recorded_chain() -> None:
    rows = _chain(10)
    genesis = AuditHead(0, GENESIS, 0.0)
    assert advance(rows, KEY, genesis)[0].seq == 10
    assert advance([], KEY, genesis) == (genesis, None)
    head, problem = advance(rows[3:], KEY, _at(rows, 4))
    assert problem is None and (head.seq, head.head) == (10, rows[-1].row_hash)
    head, problem = advance(rows[3:4], KEY, _at(rows, 4))  # nothing new: stays
    assert problem is None and head.seq == 4
    anchor = _at(rows, 8)
    # the log ends before the anchor (rows 5-10 cut): rows from seq 8 on are none
    head, problem = advance([], KEY, anchor)
    assert head == anchor and "ends before the recorded head (seq 8" in str(problem)
    # cut rows 5-10, refilled by new traffic: seq 8 exists with another MAC
    refilled = rows[:4] + _chain(6, start=5, prev=rows[3].row_hash, marker="new")
    head, problem = advance(refilled[7:], KEY, anchor)
    assert head == anchor and "carries another MAC" in str(problem)
    # the anchor row itself cut, later rows kept (seq 9 comes first)
    head, problem = advance(rows[8:], KEY, anchor)
    assert head == anchor and "(seq 8, recorded" in str(problem) and "is gone" in str(problem)
    # a gap, a row that does not link, an edited row after the anchor
    assert "does not link" in str(advance([rows[7], rows[9]], KEY, anchor)[1])
    foreign = _chain(3, start=9, prev="f" * 64)
    assert "does not link" in str(advance([rows[7], *foreign], KEY, anchor)[1])
    edited = rows[8].__class__(**{**rows[8].__dict__, "status": 500})
    assert "content does not match" in str(advance([rows[7], edited, rows[9]], KEY, anchor)[1])
    # from the genesis: the first row cut
    assert "does not link" in str(advance(_chain(3, start=2), KEY, genesis)[1])
