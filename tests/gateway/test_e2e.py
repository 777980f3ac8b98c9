"""End to end over real HTTP: uvicorn on 127.0.0.1, httpx, sandboxed ONNX workers."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from airlock._cli import main
from tests.gateway import _models
from tests.gateway.conftest import Env

# One process runs the whole module: the tests share the module's gateway (one start instead of one per
# xdist worker), and the audit test reads the rows the earlier tests' requests wrote (429, 503, 401,
# 404). Handed out one by one, a worker holding the audit test without them failed.
pytestmark = pytest.mark.xdist_group("gateway-e2e")

X = [[1.0, 2.0, 3.0, 4.0]]


def _infer_body(x: list[list[float]] = X) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(x), 4], "data": x}]}


def _slow_body(rows: int) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
            {"name": "shape", "datatype": "INT64", "shape": [2], "data": [rows, 1024]},
        ]
    }


def _client(env: Env, tenant: str | None = None, token: str | None = None) -> httpx.Client:
    headers = {}
    if token is None and tenant is not None:
        token = env.tokens[tenant]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=env.url, headers=headers, timeout=20)


def test_health_and_server_metadata_are_public(env: Env) -> None:
    with _client(env) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2").json()["name"] == "airlock"


def test_infer_returns_the_models_output(env: Env) -> None:
    with _client(env, "acme") as client:
        response = client.post("/v2/models/affine/infer", json={**_infer_body(), "id": "req-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-1" and body["model_name"] == "affine"
    (output,) = body["outputs"]
    assert output["name"] == "y" and output["datatype"] == "FP32" and output["shape"] == [1, 3]
    expected = np.array(X, dtype=np.float32) @ _models.AFFINE_W + _models.AFFINE_B
    np.testing.assert_allclose(output["data"], expected.reshape(-1), rtol=1e-6)
    assert len(response.headers["x-request-id"]) == 32


def test_missing_wrong_and_revoked_keys_get_401(env: Env) -> None:
    url = "/v2/models/affine/infer"
    wrong = "alk_" + env.key_ids["acme"] + "_" + "A" * 43  # the right key id with a wrong secret
    for token in (None, "nonsense", wrong, "alk_0000000000000000_" + "B" * 43):
        with _client(env, token=token) as client:
            response = client.post(url, json=_infer_body())
        assert response.status_code == 401, token
        assert response.json() == {"error": "unauthenticated"}
        assert response.headers["www-authenticate"] == "Bearer"
    config = str(env.config.source)
    from airlock.gateway import create_key, open_store

    store = open_store(env.config)
    record, token = create_key(store, "acme")
    store.close()
    with _client(env, token=token) as client:
        assert client.post(url, json=_infer_body()).status_code == 200
        assert main(["key", "revoke", record.key_id, "--config", config]) == 0
        response = client.post(url, json=_infer_body())  # the very next request
        assert response.status_code == 401
        assert token not in response.text and "acme" not in response.text


def test_a_tenant_never_sees_another_tenants_model(env: Env) -> None:
    with _client(env, "acme") as acme, _client(env, "globex") as globex:
        listed = [m["name"] for m in acme.get("/v2/models").json()["models"]]
        assert listed == ["affine", "slow"]
        assert [m["name"] for m in globex.get("/v2/models").json()["models"]] == ["affine", "globex-private"]
        for path in ("/v2/models/globex-private", "/v2/models/globex-private/ready"):
            response = acme.get(path)
            assert response.status_code == 404 and response.json() == {"error": "not found"}
        calls = [
            acme.post(f"/v2/models/{name}/infer", json=_infer_body())
            for name in ("globex-private", "no-such")
        ]
        assert [r.status_code for r in calls] == [404, 404]
        assert calls[0].content == calls[1].content  # someone else's model looks exactly like no model
        assert all("globex" not in r.text for r in calls)
        assert globex.post("/v2/models/globex-private/infer", json=_infer_body()).status_code == 200


def test_a_scoped_key_calls_only_its_models(env: Env) -> None:
    from airlock.gateway import create_key, open_store

    store = open_store(env.config)
    _, token = create_key(store, "acme", ("slow",))
    store.close()
    with _client(env, token=token) as client:
        assert [m["name"] for m in client.get("/v2/models").json()["models"]] == ["slow"]
        response = client.post("/v2/models/affine/infer", json=_infer_body())
        assert response.status_code == 403 and response.json() == {"error": "forbidden"}


def test_model_metadata_shows_the_admission_record(env: Env) -> None:
    with _client(env, "acme") as client:
        meta = client.get("/v2/models/affine").json()
        assert client.get("/v2/models/affine/ready").json() == {"name": "affine", "ready": True}
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    admission = meta["airlock"]["admission"]
    assert admission["decision"] == "admitted" and admission["verdict"] == "CLEAN"
    assert admission["digest"].startswith("sha256:") and len(admission["digest"]) == 71


def test_a_burst_beyond_the_limit_gets_exactly_the_expected_429s(env: Env) -> None:
    # tenant "limited": 5 requests per minute, so a burst of 8 gets 5 answers and 3 refusals
    with _client(env, "limited") as client:
        responses = [client.post("/v2/models/affine/infer", json=_infer_body()) for _ in range(8)]
    assert [r.status_code for r in responses] == [200] * 5 + [429] * 3
    for response in responses[5:]:
        assert 1 <= int(response.headers["retry-after"]) <= 12
        assert response.json() == {"error": "rate limit exceeded: requests"}
    with _client(env, "acme") as client:  # another tenant's budget is untouched
        assert client.post("/v2/models/affine/infer", json=_infer_body()).status_code == 200


def test_oversize_bodies_get_413(env: Env) -> None:
    big = _infer_body([[1.0, 2.0, 3.0, 4.0]] * 4000)  # ~100 kB of JSON; the cap is 64 kB
    with _client(env, "acme") as client:
        assert client.post("/v2/models/affine/infer", json=big).status_code == 413

        def chunks() -> Any:
            for _ in range(100):
                yield b" " * 1024

        response = client.post("/v2/models/affine/infer", content=chunks())  # chunked: no Content-Length
        assert response.status_code == 413
        assert response.json() == {"error": "request body too large: the limit is 65536 bytes"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b'{"inputs": []}', "inputs must be a non-empty array"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]}]}',
         "input 'x': data has 3 elements, shape [1, 4] needs 4"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": ["a", "b", "c", "d"]}]}',
         "input 'x': data holds values of the wrong kind for FP32"),
        (b'{"inputs": [{"name": "x", "datatype": "STRING", "shape": [1], "data": ["a"]}]}',
         "input 'x': datatype is not one of"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}',
         "input 'x': got FP32 [1, 3], the model takes FP32 [-1, 4]"),
        (b'{"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}',
         "inputs are ['z'], the model takes ['x']"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [[1, 2, 3, 4], [1]]}]}',
         "input 'x': data is ragged or not numeric"),
    ],
)  # fmt: skip
def test_malformed_tensors_get_400_with_a_clear_message(env: Env, body: bytes, message: str) -> None:
    with _client(env, "acme") as client:
        response = client.post("/v2/models/affine/infer", content=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith("invalid request: " + message)


def _lane(env: Env, tenant: str, model: str) -> Any:
    state = env.running.gateway.state
    assert state is not None
    return state.lanes[(tenant, model)]


def _wait_for_new_pid(env: Env, tenant: str, model: str, old: list[int]) -> list[int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = _lane(env, tenant, model).pids()
        if pids and pids != old:
            return list(pids)
        time.sleep(0.05)
    raise AssertionError("the worker was not restarted within 20 s")


def test_a_worker_killed_mid_request_gives_503_and_is_restarted(env: Env) -> None:
    before = _lane(env, "acme", "slow").pids()
    assert len(before) == 1
    results: dict[str, httpx.Response] = {}

    def call() -> None:
        with _client(env, "acme") as client:
            results["slow"] = client.post("/v2/models/slow/infer", json=_slow_body(1024))

    lane = _lane(env, "acme", "slow")
    dispatched = lane.dispatched
    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 10
    while lane.dispatched == dispatched and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # the request is now inside the worker (it needs seconds; the deadline is 1.5 s)
    os.killpg(before[0], signal.SIGKILL)  # as the OOM killer would
    with _client(env, "globex") as globex:  # another tenant, meanwhile: unaffected
        assert [globex.post("/v2/models/affine/infer", json=_infer_body()).status_code for _ in range(5)] == [
            200
        ] * 5
    thread.join(20)
    assert results["slow"].status_code == 503
    assert results["slow"].json() == {"error": "model worker unavailable; it is being restarted"}
    after = _wait_for_new_pid(env, "acme", "slow", before)
    assert after[0] != before[0]
    with _client(env, "acme") as client:
        response = client.post("/v2/models/slow/infer", json=_slow_body(1))
    assert response.status_code == 200, response.text


def test_a_request_past_its_deadline_gets_504_and_the_worker_is_replaced(env: Env) -> None:
    before = _lane(env, "acme", "slow").pids()
    started = time.monotonic()
    with _client(env, "acme") as client:
        response = client.post("/v2/models/slow/infer", json=_slow_body(1024))
        elapsed = time.monotonic() - started
        assert response.status_code == 504 and response.json() == {"error": "request timed out"}
        assert 1.4 < elapsed < 4.0
        _wait_for_new_pid(env, "acme", "slow", before)
        assert client.post("/v2/models/slow/infer", json=_slow_body(1)).status_code == 200


def test_metrics_are_served_on_the_loopback_admin_port(env: Env) -> None:
    port = env.running.gateway.admin_port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'airlock_requests_total{model="affine",status="200",tenant="acme"}' in text
    assert 'airlock_rate_limited_total{budget="requests",tenant="limited"} 3.0' in text
    assert "airlock_unauthenticated_total" in text


def _copy_state(env: Env, folder: Path) -> Path:
    """A copy of the running gateway's state (the head file first, then the database), with a config
    naming the same audit key."""
    folder.mkdir()
    env.running.gateway._write_head()  # as the gateway does every few seconds
    head = env.config.audit.head_file
    if head.exists():
        (folder / "head.json").write_bytes(head.read_bytes())
    source = sqlite3.connect(env.config.server.state)
    target = sqlite3.connect(folder / "state.db")
    source.backup(target)
    source.close()
    target.close()
    config = folder / "gateway.toml"
    config.write_text(
        f'[server]\nstate = "state.db"\n[audit]\nkey_file = "{env.config.audit.key_file}"\n'
        'head_file = "head.json"\n',
        encoding="utf-8",
    )
    return config


def test_the_audit_log_records_requests_and_detects_tampering(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--config", str(env.config.source)]) == 0
    rows = (
        sqlite3.connect(env.config.server.state)
        .execute("SELECT tenant, decision, status FROM audit")
        .fetchall()
    )
    assert ("limited", "limited:requests", 429) in rows and ("acme", "failed:worker", 503) in rows
    assert ("", "denied:unauthenticated", 401) in rows and ("acme", "denied:not-found", 404) in rows

    def tampered(name: str, sql: str) -> str:
        config = _copy_state(env, tmp_path / name)
        db = sqlite3.connect(config.parent / "state.db")
        db.executescript(sql)
        db.commit()
        db.close()
        capsys.readouterr()
        assert main(["audit", "verify", "--config", str(config)]) == 1
        return capsys.readouterr().out

    assert "row seq 3: content does not match its MAC (the row was edited)" in tampered(
        "edited", "UPDATE audit SET status = 200 WHERE seq = 3;"
    )
    assert "row seq 5: expected seq 4 (a row was removed or reordered)" in tampered(
        "removed", "DELETE FROM audit WHERE seq = 4;"
    )
    out = tampered(
        "reordered",
        "UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; "
        "UPDATE audit SET seq = 3 WHERE seq = -1;",
    )
    assert "row seq 2: prev_hash does not match" in out and "row seq 3: prev_hash does not match" in out
    # rows cut from the end leave a valid shorter chain: the recorded head catches it
    config = _copy_state(env, tmp_path / "intact")
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(config)]) == 0
    head = capsys.readouterr().out.split("head ")[1].strip()
    db = sqlite3.connect(config.parent / "state.db")
    db.execute("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)")
    db.commit()
    db.close()
    assert main(["audit", "verify", "--config", str(config), "--expect-head", head]) == 1
