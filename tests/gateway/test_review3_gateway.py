"""Outside review 3 of ``airlock serve`` (issue 12's attack classes, other parameters): reproducers.

Each test is one finding on the reviewed code, over real HTTP against a real gateway with
sandboxed workers; each is marked ``xfail(strict=True)`` until the finding is fixed (then the
marker must go). Every attack is bounded in time and size.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from airlock._cli import main
from airlock.gateway import Gateway, create_key, load_config, open_store
from tests.gateway import _models
from tests.gateway.conftest import Env, Running, write_config
from tests.gateway.test_hardening import AFFINE, BODY, _raw, make_gateway

__all__ = ["make_gateway"]  # a fixture, imported for pytest

pytestmark = pytest.mark.xdist_group("review3")


def _descendants(pid: int) -> list[int]:
    """``pid``'s descendants, nearest first (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        for child in children.get(current, []):
            found.append(child)
            todo.append(child)
    return found


# F1 -------------------------------------------------------------------------------------------


def test_review3_f1_x_forwarded_for_does_not_pick_the_preauth_bucket(make_gateway: Any) -> None:
    """F1 variant, X-Forwarded-For spoofing.

    Sent: 40 requests with a wrong key from 127.0.0.1, each with another ``X-Forwarded-For:
    10.0.0.N``, to a gateway whose failure bucket is 5 (burst) at 1/s.
    Happened: 40 audited 401s, no 429: uvicorn's ``proxy_headers`` is on by default and trusts
    X-Forwarded-For from 127.0.0.1 (``forwarded_allow_ips``), so every request got the bucket of
    the address it claimed. Behind a local TCP/TLS terminator (stunnel, an L4 sidecar: every peer
    is 127.0.0.1) any stranger picks its own bucket (unbounded failed authentications) or names a
    victim's address to drain that victim's bucket. docs/serve.md says the gateway does not trust
    X-Forwarded-For.
    Should: the bucket is the TCP peer's; after the burst, 429s.
    """
    gateway = make_gateway(server="preauth_failures_per_second = 1\npreauth_failure_burst = 5\n")
    statuses = []
    with httpx.Client(base_url=gateway.url, timeout=20) as client:
        for i in range(40):
            headers = {"Authorization": "Bearer alk_0000000000000000_" + "a" * 43,
                       "X-Forwarded-For": f"10.0.{i // 200}.{i % 200 + 1}"}  # fmt: skip
            statuses.append(client.get("/v2/models/affine", headers=headers).status_code)
    assert statuses.count(401) <= 5 + 5  # the burst, plus refill over a slow run
    assert statuses.count(429) >= 30


# F9 -------------------------------------------------------------------------------------------


def test_review3_f9_obs_folded_transfer_encoding_with_content_length_is_a_400(env: Env) -> None:
    """F9 variant, obsolete line folding.

    Sent: ``X-A: b`` followed by the continuation line `` Transfer-Encoding: chunked`` (leading
    space: obs-fold), plus ``Content-Length`` and a valid body.
    Happened: 200, the model ran: h11 folds the line into X-A's value, so the gateway frames with
    Content-Length, while a front proxy that reads the folded line as a header of its own frames
    with chunked: the TE.CL desync that the CL+TE 400 is meant to rule out.
    Should: a request head with obs-fold is a 400 that closes the connection (RFC 9112 5.2 allows
    rejecting; strict HTTP here means rejecting).
    """
    body = json.dumps(BODY).encode()
    request = (
        b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {env.tokens['acme']}\r\n".encode()
        + b"X-A: b\r\n Transfer-Encoding: chunked\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )  # fmt: skip
    answer = _raw(int(env.url.rsplit(":", 1)[1]), request)
    assert answer.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize(
    "lengths", ["{n}\r\nContent-Length: {n}", "{n}, {n}"], ids=["two-headers", "comma-list"]
)
def test_review3_f9_a_repeated_content_length_is_a_400_as_documented(env: Env, lengths: str) -> None:
    """F8/F9 variant, Content-Length given twice with the same value.

    Sent: a valid inference call whose head carries ``Content-Length: N`` twice (or once as
    ``N, N``).
    Happened: 200, the model ran: h11 collapses identical Content-Length values into one header
    before the gateway's duplicate check sees the headers, though docs/serve.md lists
    Content-Length among the single-valued headers whose duplicates are a 400 (``invalid request:
    ambiguous headers``, connection closed). No desync is possible with equal values; the
    defect is that the documented strict rule does not hold (a proxy that rejects or rewrites
    such heads will disagree with the gateway about which requests exist).
    Should: 400 ``invalid request: ambiguous headers`` and the connection closed, as documented
    (or the documentation says that identical repeats are merged).
    """
    body = json.dumps(BODY).encode()
    request = (
        b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {env.tokens['acme']}\r\n".encode()
        + f"Content-Length: {lengths.format(n=len(body))}\r\n\r\n".encode() + body
    )  # fmt: skip
    answer = _raw(int(env.url.rsplit(":", 1)[1]), request)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:40]


# F5 -------------------------------------------------------------------------------------------


def test_review3_f5_a_killed_model_process_inside_the_sandbox_is_noticed(make_gateway: Any) -> None:
    """F5 variant, the process the OOM killer picks.

    Sent: SIGKILL to the deepest process of an idle worker's sandbox (bwrap -> zygote -> the
    forked job that holds the loaded model: the largest process, the one the OOM killer chooses);
    bwrap and the zygote stay alive. Then, 3 s later, one ordinary request.
    Happened: /v2/health/ready stayed 200 and the request got 503 ``failed:worker``: the pidfd
    watches the sandbox's outer process only.
    Should: the dead job is noticed (readiness drops while it is replaced) and the next request
    is served (200).
    """
    gateway = make_gateway()
    lane = gateway.running.gateway.state.lanes[("acme", "affine")]
    (outer,) = lane.pids()
    tree = _descendants(outer)
    assert len(tree) >= 2, tree  # bwrap -> zygote -> job
    os.kill(tree[-1], signal.SIGKILL)
    time.sleep(3.0)
    with gateway.client("acme") as client:
        response = client.post("/v2/models/affine/infer", json=BODY)
    assert response.status_code == 200, response.text


# F6 -------------------------------------------------------------------------------------------


def test_review3_f6_a_locked_state_database_does_not_stall_every_tenant(make_gateway: Any) -> None:
    """F6 variant, the store locked rather than full.

    Sent: another process holds a write transaction on the state database (``BEGIN IMMEDIATE``:
    an operator's sqlite3 shell, a maintenance script, ``airlock key revoke`` on a slow disk) for 4 s; meanwhile acme
    makes one inference call and an unauthenticated caller asks ``/v2/health/live``.
    Happened: /v2/health/live took ~4 s: the audit row's ``BEGIN IMMEDIATE`` runs inline on the
    event loop with SQLite's 10 s busy timeout, so every tenant, every probe and the metrics wait
    for the lock (up to 10 s per write).
    Should: the waiting write holds up only the request whose row it is (refused with the audit
    503 if the lock outlives its deadline); /v2/health/live answers in well under a second.
    """
    gateway = make_gateway()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"db = sqlite3.connect({str(gateway.config.server.state)!r}, isolation_level=None)\n"
         "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(4); db.execute('ROLLBACK')\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        outcome: dict[str, int] = {}

        def call() -> None:
            with gateway.client("acme") as client:
                outcome["status"] = client.post("/v2/models/affine/infer", json=BODY).status_code

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert httpx.get(f"{gateway.url}/v2/health/live", timeout=30).status_code == 200
        elapsed = time.monotonic() - started
        caller.join(30)
    finally:
        holder.wait(30)
    assert elapsed < 1.5, f"/v2/health/live took {elapsed:.1f} s while the state database was locked"


# F7 -------------------------------------------------------------------------------------------


def test_review3_f7_rows_cut_while_stopped_are_still_detected_after_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """F7 variant, cut then restart.

    Sent: 5 calls (10 rows; the head file records seq 10); the gateway stops (or crashes); rows
    seq > 4 are deleted from the state database (no key needed); the gateway is started again
    (a supervisor does this at once after a crash) and stopped.
    Happened: before the restart ``airlock audit verify`` reports the cut (exit 1); the restart
    writes the head file from the shortened log (seq 4) without comparing it with the recorded
    head, and verify then says ``audit log intact`` (exit 0): the cut is gone without a trace.
    Should: start-up compares the log with the recorded head; a log that ends before it is
    refused (or the old head is kept), so verify still reports the removed rows.
    """
    _models.affine(tmp_path / "affine.onnx")
    path = write_config(
        tmp_path, AFFINE.replace(', "globex"', "") + "\n[audit]\nhead_interval_seconds = 0.2\n"
    )
    config = load_config(path)
    store = open_store(config)
    store.add_tenant("acme", None)
    token = create_key(store, "acme")[1]
    store.close()
    running = Running(Gateway(config))
    url = f"http://127.0.0.1:{running.gateway.port}"
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=20) as client:
            for _ in range(5):
                assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
    finally:
        running.stop()
    assert json.loads(config.audit.head_file.read_text())["seq"] == 10
    db = sqlite3.connect(config.server.state)
    db.execute("DELETE FROM audit WHERE seq > 4")
    db.commit()
    db.close()
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(path)]) == 1  # detected before the restart
    try:
        restarted = Running(Gateway(config))
    except Exception:  # refusing to start over a shortened log is a fix too
        restarted = None
    if restarted is not None:
        restarted.stop()
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(path)]) == 1
    assert "the chain ends at seq 4" in capsys.readouterr().out


# F2 -------------------------------------------------------------------------------------------

FREE = """
[models.affine]
path = "affine.onnx"
runtime = "onnx"
tenants = ["acme", "globex"]
inputs = [{ name = "x", datatype = "FP32", shape = [-1, 4] }]

[models.free]
path = "affine.onnx"
runtime = "onnx"
tenants = ["acme"]
"""


def test_review3_f2_a_tenants_many_element_bytes_requests_do_not_stall_another(make_gateway: Any) -> None:
    """F2 variant, BYTES tensors of many empty elements (binary tensor extension).

    Sent: tenant A (acme), on two connections back to back, 16 MiB binary requests (the body cap)
    holding one BYTES input of ~4.2 M empty elements (a 4-byte length each) to a model without
    declared inputs (its worker refuses BYTES: 400 ``failed:model``); meanwhile tenant B
    (globex) sends small FP32 requests to another model, one at a time.
    Happened: the elements are split in A's codec process, but come back as a Python list of
    ``bytes`` (unpickled in the gateway), are checked one by one on the event loop
    (``_codec._rebuild``) and framed for the worker element by element in the gateway process
    (``sandbox._messages._encode_bytes``, holding the GIL): each of A's requests held B's answer
    ~1 s (B alone: a few ms; with 8 MiB bodies B's p99 was 0.5-0.6 s, the issue's goal is 250 ms).
    Should: a tenant's BYTES elements never cost the gateway process per-element Python work
    (offsets and one buffer, as the worker frame already is); B never waits 0.4 s for an answer.
    """
    max_body = 16 * 1024 * 1024
    gateway = make_gateway(server=f"max_body_bytes = {max_body}\nrequest_timeout_seconds = 60\n", models=FREE)
    count = (max_body - 1024) // 4
    header = json.dumps(
        {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [count],
                     "parameters": {"binary_data_size": 4 * count}}]}
    ).encode()  # fmt: skip
    big = header + b"\x00\x00\x00\x00" * count
    statuses: list[int] = []
    flooding = threading.Event()
    flooding.set()

    def tenant_a() -> None:
        headers = {"Authorization": f"Bearer {gateway.tokens['acme']}"}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=120) as a:
            while flooding.is_set():
                reply = a.post(
                    "/v2/models/free/infer", content=big,
                    headers={"Inference-Header-Content-Length": str(len(header))},
                )  # fmt: skip
                statuses.append(reply.status_code)

    def latencies(client: httpx.Client, until: Any) -> list[float]:
        samples: list[float] = []
        while not until():
            started = time.perf_counter()
            assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
            samples.append(time.perf_counter() - started)
            time.sleep(0.005)
        return samples

    with gateway.client("globex") as b:
        end = time.monotonic() + 1.5
        alone = latencies(b, lambda: time.monotonic() > end)
        threads = [threading.Thread(target=tenant_a, daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            end = time.monotonic() + 40
            loaded = latencies(b, lambda: len(statuses) >= 3 or time.monotonic() > end)
        finally:
            flooding.clear()
            for thread in threads:
                thread.join(120)
    assert len(statuses) >= 3 and set(statuses) <= {400, 429}, statuses  # the model refuses BYTES
    worst, alone_worst = max(loaded), max(alone)
    assert worst < 0.4, (
        f"B waited {worst * 1000:.0f} ms for one answer while A's BYTES requests were handled "
        f"({len(loaded)} answers; alone: worst {alone_worst * 1000:.0f} ms)"
    )


def test_review3_f7_rows_cut_under_a_running_gateway_stay_detected_once_new_rows_pass_the_head(
    make_gateway: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """F7 variant, cut while running, then let traffic refill the sequence numbers.

    Sent: 5 calls (rows 1-10; the head file records seq 10); rows seq > 4 are deleted from the
    state database while the gateway runs (no key needed); then 4 more calls (the gateway
    appends rows 5-12 after row 4, a consistent chain).
    Happened: the periodic head writer logs "audit log shorter than its recorded head" and keeps
    the old head, but only until the new rows' seq passes it: then it records seq 12 of the new
    chain, the removed rows 5-10 are nowhere in the head file, and ``airlock audit verify``
    says ``audit log intact`` (exit 0).
    Should: the head only moves forward along the chain it recorded (the recorded seq must still
    hold the recorded MAC); verify reports the replaced rows (exit 1).
    """
    gateway = make_gateway(extra="[audit]\nhead_interval_seconds = 0.1\n")
    head_file = gateway.config.audit.head_file

    def head_reaches(seq: int) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if json.loads(head_file.read_text())["seq"] >= seq:
                return
            time.sleep(0.05)
        raise AssertionError(f"the head file never reached seq {seq}")

    with gateway.client("acme") as client:
        for _ in range(5):
            assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
        head_reaches(10)
        db = sqlite3.connect(gateway.config.server.state)
        db.execute("DELETE FROM audit WHERE seq > 4")
        db.commit()
        db.close()
        time.sleep(0.5)  # the writer has seen the shorter log (and kept the recorded head)
        for _ in range(4):
            assert client.post("/v2/models/affine/infer", json=BODY).status_code == 200
    time.sleep(1.0)  # several head intervals: the writer had every chance to move on
    config = tmp_path / "verify.toml"
    config.write_text(
        f'[server]\nstate = "{gateway.config.server.state}"\n[audit]\n'
        f'key_file = "{gateway.config.audit.key_file}"\nhead_file = "{head_file}"\n',
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(config)]) == 1, capsys.readouterr().out


# F4 -------------------------------------------------------------------------------------------


def test_review3_f4_idle_keep_alive_connections_of_strangers_do_not_lock_tenants_out(
    make_gateway: Any,
) -> None:
    """F4 variant, many idle keep-alive connections (no key needed).

    Sent: with ``max_connections = 24`` and ``max_connections_per_address = 8``, three source
    addresses (127.0.0.2-4) open 8 connections each and make one unauthenticated
    ``GET /v2/health/live`` on each, then leave them idle inside ``keep_alive_seconds`` (an
    attacker repeats the cheap request every few seconds to keep them). Then tenant acme, from a
    fourth address, makes one inference call.
    Happened: acme's connection is closed at once (``reason="connections"``): strangers holding
    idle connections own the whole global cap; with the defaults (1024, 64 per address) 16 IPv4
    addresses, or 16 /64s of one IPv6 /60, lock every tenant out indefinitely.
    Should: a connection that sits idle between requests gives way to a new one when the cap is
    reached (close the longest-idle keep-alive connection; HTTP/1.1 allows it at any time), so
    acme is served (200).
    """
    gateway = make_gateway(
        server="max_connections = 24\nmax_connections_per_address = 8\nkeep_alive_seconds = 30\n"
        "preauth_burst = 100000\npreauth_requests_per_second = 100000\n"
    )
    cap = gateway.running.gateway.state.guard.cap
    assert cap == 24, cap  # not lowered by the descriptor limit
    held: list[httpx.Client] = []
    try:
        for last in (2, 3, 4):
            for _ in range(8):
                client = httpx.Client(
                    base_url=gateway.url,
                    timeout=10,
                    transport=httpx.HTTPTransport(local_address=f"127.0.0.{last}"),
                )
                assert client.get("/v2/health/live").status_code == 200  # the connection stays open
                held.append(client)
        assert gateway.running.gateway.state.guard.total == 24
        with gateway.client("acme", source="127.0.0.9") as client:
            status: int | str
            try:
                status = client.post("/v2/models/affine/infer", json=BODY).status_code
            except httpx.TransportError as exc:
                status = f"connection closed: {type(exc).__name__}"
        assert status == 200, status
    finally:
        for client in held:
            client.close()


# F11 ------------------------------------------------------------------------------------------


def test_review3_f11_a_text_request_error_does_not_echo_the_callers_number() -> None:
    """F11 variant, the OpenAI-compatible endpoints.

    Sent (over HTTP to ``/v1/chat/completions`` of a gateway serving SmolLM2 with
    ``max_tokens = 8``): ``"max_tokens": 999…9`` with 4000 digits.
    Happened: ``400 {"error": {"message": "max_tokens 999…(all 4000 digits)… is above this
    model's limit of 8"}}``: the caller's bytes come back in the error text, as long as Python
    will print an int (4300 digits). Checked here on :func:`read_text_body`, the function the
    gateway runs on every text body (inline or in the tenant's codec), so no 100 MB model has to
    load; the HTTP reply carries exactly this message.
    Should: a fixed phrase (``max_tokens is above this model's limit of 8``), as for the
    other 400s.
    """
    from airlock.gateway._openai import read_text_body

    raw = (
        '{"model":"chat","max_tokens":' + "9" * 4000 + ',"messages":[{"role":"user","content":"hi"}]}'
    ).encode()
    kind, name, detail = read_text_body(raw, True, {"chat": (8, 256)})
    assert (kind, name) == ("invalid", "chat")
    message, _param = detail
    assert "9999" not in message and len(message) < 200, message[:120]
