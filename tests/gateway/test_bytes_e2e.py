"""KServe v2 BYTES over real HTTP to a real sandboxed ONNX model that takes and returns strings.

The model (built in code with the ``onnx`` helper API) appends ``"!"`` to each string with
StringConcat, so an answer proves the graph ran on the text (not an echo by the gateway). JSON and
binary requests and replies, the tenant codec path (``offload_bytes`` is small here), the element
count bound at N-1/N/N+1, hostile inputs (a length prefix that overruns, bytes after the last
element, invalid UTF-8 for a text model, a huge declared count with a tiny body).
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from onnx import TensorProto, helper

from airlock.gateway import Gateway, create_key, load_config, open_store
from tests.gateway.conftest import Running, write_config

MODELS = """
[models.shout]
path = "shout.onnx"
runtime = "onnx"
tenants = ["acme"]
inputs = [{ name = "x", datatype = "BYTES", shape = [-1] }]

[models.shout-open]
path = "shout.onnx"
runtime = "onnx"
tenants = ["acme"]
"""


def _shout(path: Path) -> Path:
    suffix = helper.make_tensor("suffix", TensorProto.STRING, [1], [b"!"])  # type: ignore[list-item]
    graph = helper.make_graph(
        [helper.make_node("StringConcat", ["x", "suffix"], ["y"])],
        "shout",
        [helper.make_tensor_value_info("x", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [None])],
        [suffix],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path


_RUNNING: list[Running] = []


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    folder = tmp_path_factory.mktemp("bytes")
    _shout(folder / "shout.onnx")
    config = load_config(
        write_config(folder, MODELS, server="offload_bytes = 1024\nrequest_timeout_seconds = 10.0")
    )
    store = open_store(config)
    store.add_tenant("acme", None)
    _, token = create_key(store, "acme")
    store.close()
    running = Running(Gateway(config))
    _RUNNING[:] = [running]
    try:
        url = f"http://127.0.0.1:{running.gateway.port}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            yield http
    finally:
        running.stop()


def _prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def _binary(
    client: httpx.Client, elements: bytes, shape: list[int], model: str = "shout", out: bool = False
) -> httpx.Response:
    request: dict[str, object] = {
        "inputs": [
            {
                "name": "x",
                "datatype": "BYTES",
                "shape": shape,
                "parameters": {"binary_data_size": len(elements)},
            }
        ]
    }
    if out:
        request["parameters"] = {"binary_data_output": True}
    header = json.dumps(request).encode()
    return client.post(
        f"/v2/models/{model}/infer",
        content=header + elements,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )


def _strings(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "y" and output["datatype"] == "BYTES"
    return list(output["data"])


def test_json_text_reaches_the_model_and_comes_back(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [3], "data": ["hello", "ÄB ✓", ""]}]}
    assert _strings(client.post("/v2/models/shout/infer", json=body)) == ["hello!", "ÄB ✓!", "!"]


def test_binary_request_and_binary_reply(client: httpx.Client) -> None:
    response = _binary(client, _prefixed(b"abc", "é".encode(), b""), [3], out=True)
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    (meta,) = json.loads(response.content[:length])["outputs"]
    assert meta["datatype"] == "BYTES" and meta["shape"] == [3]
    assert meta["parameters"]["binary_data_size"] == len(response.content) - length
    assert response.content[length:] == _prefixed(b"abc!", "é!".encode(), b"!")


def test_large_requests_go_through_the_tenant_codec(client: httpx.Client) -> None:
    state = _RUNNING[0].gateway.state
    assert state is not None
    codecs = state.codecs
    response = _binary(client, _prefixed(b"small"), [1])
    assert _strings(response) == ["small!"] and codecs.pids("acme") == []  # parsed inline
    words = [f"w{i}" for i in range(800)]  # ~8 KiB: above offload_bytes, parsed in the codec
    body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [800], "data": words}]}
    assert _strings(client.post("/v2/models/shout/infer", json=body)) == [w + "!" for w in words]
    response = _binary(client, _prefixed(*(w.encode() for w in words)), [800])
    assert _strings(response) == [w + "!" for w in words]
    assert codecs.pids("acme")


def test_element_count_at_n_minus_1_n_n_plus_1(client: httpx.Client) -> None:
    n = 50
    elements = _prefixed(*[b"a"] * n)  # 5n bytes
    assert _strings(_binary(client, elements, [n])) == ["a!"] * n
    response = _binary(client, elements, [n + 1])
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid request: input 'x': BYTES element 50's length prefix runs past binary_data_size"
    }
    response = _binary(client, elements, [n - 1])
    assert response.json() == {
        "error": "invalid request: input 'x': binary_data_size has 5 bytes after the last element"
    }
    # a count beyond 4 bytes an element is refused before any element is read
    response = _binary(client, _prefixed(*[b""] * n), [n + 1])
    assert response.json() == {
        "error": "invalid request: input 'x': 51 BYTES elements need at least 204 bytes, binary_data_size is 200"
    }


def test_hostile_inputs_get_fixed_400s_and_the_worker_serves_on(client: httpx.Client) -> None:
    overrun = struct.pack("<I", 0xFFFFFFF0) + b"abc"
    response = _binary(client, overrun, [1])
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid request: input 'x': BYTES element 0's length runs past binary_data_size"
    }
    # a huge declared count with a tiny body: refused at once, nothing allocated for it
    started = time.perf_counter()
    body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2**40], "data": ["a"]}]}
    response = client.post("/v2/models/shout/infer", json=body)
    assert response.status_code == 400 and time.perf_counter() - started < 5
    assert "more elements than the body can hold" in response.json()["error"]
    response = _binary(client, _prefixed(b"a"), [2**40])
    assert response.status_code == 400 and "BYTES elements need at least" in response.json()["error"]
    # numbers where strings are declared, and strings where the model takes none
    body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [1]}]}
    assert client.post("/v2/models/shout/infer", json=body).json() == {
        "error": "invalid request: input 'x': BYTES element 0 is not a string"
    }
    # invalid UTF-8 for a tensor(string) input: the job refuses it before the graph runs (onnxruntime
    # would have fed the text of its repr); the worker is intact
    for model in ("shout", "shout-open"):
        response = _binary(client, _prefixed(b"ok", b"\xff\xfe"), [2], model=model)
        assert response.status_code == 400
        assert response.json() == {"error": "invalid request: the model could not run on these inputs"}
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    response = client.post("/v2/models/shout-open/infer", json=body)  # no declared inputs: the job checks
    assert response.json() == {"error": "invalid request: the model could not run on these inputs"}
    assert _strings(_binary(client, _prefixed(b"still"), [1], model="shout-open")) == ["still!"]


def test_metadata_declares_bytes(client: httpx.Client) -> None:
    meta = client.get("/v2/models/shout").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "BYTES", "shape": [-1]}]
