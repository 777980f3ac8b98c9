"""The gateway's pieces on their own: config, keys, budgets, tensors, audit chain, public API."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import airlock.gateway
from airlock.errors import UsageError
from airlock.gateway import TenantLimits, create_key, load_config, open_store, verify_chain
from airlock.gateway._config import TensorSpec
from airlock.gateway._keys import authenticate
from airlock.gateway._memory_limiter import MemoryLimiter
from airlock.gateway._tensors import TensorError, encode_outputs, parse_infer_request


def test_public_api_is_pinned() -> None:
    assert airlock.gateway.__all__ == [
        "AdmissionRecord", "AuditReport", "AuditRow", "DevCertificates", "Gateway", "GatewayConfig",
        "KeyRecord", "ModelConfig", "ServerConfig", "Store", "TenantLimits", "TenantRecord", "TensorSpec",
        "TlsConfig", "admit", "create_key", "dev_certificates", "load_config", "open_store", "verify_chain",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", r"unknown key\(s\) in \[server\]: prot"),
        ("[server]\nport = 70000\n", "ports must be at most 65535"),
        ("[server]\nrequest_timeout_seconds = 0\n", "request_timeout_seconds must be > 0"),
        ("[server]\nport = true\n", "server.port must not be a boolean"),
        ("[tls]\ncert = 'a.pem'\n", r"\[tls\] needs both cert and key"),
        ("[defaults]\nmax_concurrent = 0\n", "defaults.max_concurrent must be > 0"),
        ("[sandbox]\nwal_seconds = 3\n", r"unknown sandbox limit\(s\): wal_seconds"),
        ("[models.m]\npath = 'm.onnx'\n", "models.m.tenants is empty"),
        ("[models.M]\npath = 'm.onnx'\ntenants = ['a']\n", "model name 'M' must be"),
        ("[models.m]\npath = 'm.onnx'\ntenants = ['a']\nsha256 = 'xyz'\n", "sha256 must be 64 lower-case hex"),
        ("[models.m]\npath = 'm.onnx'\ntenants = ['a']\nsignature = 's'\n", "needs both signature and public_key"),
        ("[models.m]\npath = 'm.onnx'\ntenants = ['a']\ninputs = [{name = 'x', datatype = 'F32', shape = [1]}]\n",
         "datatype 'F32' is not one of"),
        ("server = 3\n", "wrong type"),
        ("[server\n", "is not valid TOML"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=message):
        load_config(path)


def test_config_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.toml"
    path.write_text(
        "[server]\nstate = 's.db'\n[models.m]\npath = 'm.onnx'\ntenants = ['a']\n", encoding="utf-8"
    )
    config = load_config(path)
    assert config.server.state == tmp_path / "sub" / "s.db"
    assert config.models[0].path == tmp_path / "sub" / "m.onnx"
    with pytest.raises(UsageError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_keys_are_stored_hashed_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server]\nstate = 's.db'\n", encoding="utf-8")
    store = open_store(load_config(path))
    with pytest.raises(UsageError, match="no tenant named 'acme'"):
        create_key(store, "acme")
    store.add_tenant("acme", None)
    with pytest.raises(UsageError, match="tenant 'acme' already exists"):
        store.add_tenant("acme", None)
    record, token = create_key(store, "acme", ("m",))
    assert token.startswith(f"alk_{record.key_id}_") and len(token) == 4 + 16 + 1 + 43
    assert record.token_hash == hashlib.sha256(token.encode()).digest()
    raw = (tmp_path / "s.db").read_bytes() + (tmp_path / "s.db-wal").read_bytes()
    assert token.encode() not in raw and token.split("_", 2)[2].encode() not in raw
    who = authenticate(store, f"Bearer {token}")
    assert who is not None and (who.tenant, who.scopes) == ("acme", ("m",))
    for header in (None, token, f"Basic {token}", f"Bearer {token[:-1]}x", f"Bearer {token}x"):
        assert authenticate(store, header) is None, header
    assert store.revoke_key(record.key_id, 1.0) and not store.revoke_key(record.key_id, 2.0)
    assert authenticate(store, f"Bearer {token}") is None
    store.close()


def test_token_buckets_refill_over_one_minute() -> None:
    limiter = MemoryLimiter()
    limits = TenantLimits(requests_per_minute=60, tensor_bytes_per_minute=600, max_concurrent=2)
    assert all(limiter.take_request("a", limits, 0.0).allowed for _ in range(60))
    refused = limiter.take_request("a", limits, 0.0)
    assert not refused.allowed and refused.retry_after == pytest.approx(1.0) and refused.budget == "requests"
    assert not limiter.take_request("a", limits, 0.5).allowed
    assert limiter.take_request("a", limits, 1.0).allowed  # one token per second
    assert limiter.take_request("b", limits, 0.0).allowed  # tenants have separate buckets
    assert limiter.take_bytes("a", limits, 600, 0.0).allowed
    short = limiter.take_bytes("a", limits, 100, 0.0)
    assert not short.allowed and short.retry_after == pytest.approx(10.0) and short.budget == "tensor_bytes"
    assert limiter.enter("a", limits) and limiter.enter("a", limits) and not limiter.enter("a", limits)
    limiter.leave("a")
    assert limiter.enter("a", limits)


def test_tensors_round_trip_and_declared_inputs_are_enforced() -> None:
    body = b'{"id": "r", "inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}'
    parsed = parse_infer_request(body, (TensorSpec("x", "INT32", (-1, 2)),))
    request_id, arrays = parsed.id, parsed.inputs
    assert request_id == "r" and arrays["x"].dtype == np.int32 and arrays["x"].tolist() == [[1, 2], [3, 4]]
    with pytest.raises(TensorError, match="the model takes INT32 \\[-1, 3\\]"):
        parse_infer_request(body, (TensorSpec("x", "INT32", (-1, 3)),))
    for data, message in (
        ('"datatype": "UINT8", "shape": [1], "data": [300]', "out of range for UINT8"),
        ('"datatype": "INT8", "shape": [1], "data": [1.5]', "not an integer, or out of range for INT8"),
        ('"datatype": "FP16", "shape": [1], "data": [1e10]', "overflows FP16"),
        ('"datatype": "FP32", "shape": [1], "data": [NaN]', "^request body is not valid JSON$"),
        ('"datatype": "FP32", "shape": [-1], "data": []', "shape must be a list of non-negative integers"),
    ):
        with pytest.raises(TensorError, match=message):
            parse_infer_request(b'{"inputs": [{"name": "x", ' + data.encode() + b"}]}", ())
    with pytest.raises(TensorError, match=r"^request body is not valid JSON$"):  # duplicate keys
        parse_infer_request(b'{"inputs": [], "inputs": []}', ())
    out = encode_outputs({"y": np.array([[1.5, np.inf]], dtype=np.float32), "n": np.array(3, dtype=np.int64)})
    assert out == [
        {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, None]},
        {"name": "n", "datatype": "INT64", "shape": [], "data": [3]},
    ]


def test_audit_chain_links_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server]\nstate = 's.db'\n", encoding="utf-8")
    key = b"k" * 32
    store = open_store(load_config(path), audit_key=key)
    rows = [
        store.append_audit(float(i), "t", "k", "m", "sha256:x", f"r{i}", "allowed", 200) for i in range(3)
    ]
    assert [r.seq for r in rows] == [1, 2, 3] and rows[1].prev_hash == rows[0].row_hash
    report = verify_chain(store.audit_rows(), key, expect_head=rows[-1].row_hash)
    assert report.ok and report.rows == 3
    assert not verify_chain(list(store.audit_rows())[:2], key, expect_head=rows[-1].row_hash).ok
    assert not verify_chain(store.audit_rows(), b"x" * 32).ok  # another key: every MAC fails
    store.close()


def test_listening_sockets_are_tcp_with_nodelay() -> None:
    # asyncio only sets TCP_NODELAY on accepted sockets whose proto is IPPROTO_TCP; a proto-0 socket
    # cost every response ~40 ms of Nagle + delayed ACK (found by bench/gateway_bench.py)
    import socket

    from airlock.gateway._server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()


def test_the_connection_cap_leaves_descriptors_for_everything_else() -> None:
    from airlock.gateway._guard import FDS_PER_LANE, FDS_RESERVED, connection_cap

    assert connection_cap(1024, 65536, 10) == 1024
    room = 1024 - FDS_RESERVED - FDS_PER_LANE * 10
    assert connection_cap(1024, 1024, 10) == room  # an fd limit of 1024 cannot hold 1024 connections
    assert connection_cap(room - 1, 1024, 10) == room - 1
    assert connection_cap(1024, 10, 10) == 1
