"""KServe v2 BYTES tensors in the gateway (src/airlock/gateway/_bytes.py via _tensors.py): JSON strings
flat and nested, the binary extension's length-prefixed elements, every bound at N-1/N/N+1 and
checked before anything is allocated, and each refusal's fixed phrase.
"""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlock.gateway._bytes import bytes_tensors, tensor_bytes
from airlock.gateway._config import TensorSpec
from airlock.gateway._tensors import OutputError, TensorError, encode_reply, parse_infer_request


def _json(data: object, shape: list[int], name: str = "t") -> bytes:
    return json.dumps(
        {"inputs": [{"name": name, "datatype": "BYTES", "shape": shape, "data": data}]}
    ).encode()


def _binary(elements: bytes, shape: list[int], size: int | None = None) -> tuple[bytes, int]:
    size = len(elements) if size is None else size
    header = json.dumps(
        {
            "inputs": [
                {"name": "t", "datatype": "BYTES", "shape": shape, "parameters": {"binary_data_size": size}}
            ]
        }
    ).encode()
    return header + elements, len(header)


def _prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def _refused(body: bytes, message: str, header: int | None = None, **kw: Any) -> None:
    with pytest.raises(TensorError) as caught:
        parse_infer_request(body, kw.get("declared", ()), header, kw.get("max_bytes"))
    assert str(caught.value) == message


def test_json_strings_flat_and_nested_become_utf8_bytes() -> None:
    flat = parse_infer_request(_json(["a", "é", "", "\u0000x"], [2, 2]), ()).inputs["t"]
    nested = parse_infer_request(_json([["a", "é"], ["", "\u0000x"]], [2, 2]), ()).inputs["t"]
    for got in (flat, nested):
        assert got.dtype == object and got.shape == (2, 2)
        assert got.reshape(-1).tolist() == [b"a", "é".encode(), b"", b"\x00x"]
    scalar = parse_infer_request(_json(["only"], []), ()).inputs["t"]
    assert scalar.shape == () and scalar.item() == b"only"
    empty = parse_infer_request(_json([], [0, 3]), ()).inputs["t"]
    assert empty.shape == (0, 3)


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        (["a", 1], [2], "input 't': BYTES element 1 is not a string"),
        (["a", None], [2], "input 't': BYTES element 1 is not a string"),
        ([{"a": 1}], [1], "input 't': BYTES element 0 is not a string"),
        ([[1, 2]], [1, 2], "input 't': BYTES element 0 is not a string"),
        ("abc", [1], "input 't': data must be a JSON array"),
        (["a", "b"], [3], "input 't': data has 2 elements, shape [3] needs 3"),
        (["a", "b", "c", "d"], [3], "input 't': data has 4 elements, shape [3] needs 3"),
        (
            [["a", "b"], ["c"]],
            [2, 2],
            "input 't': data is neither flat nor nested as shape [2, 2] (at depth 1)",
        ),
        (
            [["a"], ["b"]],
            [2, 1, 1],
            "input 't': data is neither flat nor nested as shape [2, 1, 1] (at depth 2)",
        ),
        ([[["a"]]], [1, 1], "input 't': BYTES element 0 is not a string"),
        ([["a", "b"]], [2, 1], "input 't': data is neither flat nor nested as shape [2, 1] (at depth 0)"),
    ],
)
def test_json_bytes_of_the_wrong_kind_or_shape_are_refused(
    data: object, shape: list[int], message: str
) -> None:
    _refused(_json(data, shape), message)


def test_a_lone_surrogate_is_not_text() -> None:
    # the strict JSON parser refuses the escape inline; the codec path uses the same parser
    _refused(_json(["x"], [1]).replace(b'"x"', b'"\\ud800"'), "request body is not valid JSON")
    from airlock.gateway._bytes import BytesError, bytes_from_json

    with pytest.raises(BytesError, match=r"^input 't': BYTES element 1 is not valid Unicode text$"):
        bytes_from_json("t", (2,), ["ok", "\ud800"], 100)


def test_a_huge_declared_count_with_a_tiny_body_is_refused_before_allocation() -> None:
    tracemalloc.start()
    try:
        started = time.perf_counter()
        _refused(
            _json(["a"], [2**39]), "input 't': shape [549755813888] has more elements than the body can hold"
        )
        body, header = _binary(_prefixed(b"a"), [2**39])
        _refused(
            body,
            "input 't': 549755813888 BYTES elements need at least 2199023255552 bytes, binary_data_size is 5",
            header,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20 and time.perf_counter() - started < 1.0


def test_binary_elements_round_trip_any_bytes() -> None:
    items = [b"hello", b"", b"\xff\xfe\x00", "é".encode()]
    body, header = _binary(_prefixed(*items), [2, 2])
    got = parse_infer_request(body, (TensorSpec("t", "BYTES", (-1, 2)),), header).inputs["t"]
    assert got.shape == (2, 2) and got.reshape(-1).tolist() == items


def test_binary_element_count_bound_at_n_minus_1_n_n_plus_1() -> None:
    """n empty elements need exactly 4n bytes: one element more than the bytes allow is refused."""
    n = 10
    body, header = _binary(_prefixed(*[b""] * n), [n])
    assert parse_infer_request(body, (), header).inputs["t"].tolist() == [b""] * n
    body, header = _binary(_prefixed(*[b""] * n), [n + 1])
    _refused(body, "input 't': 11 BYTES elements need at least 44 bytes, binary_data_size is 40", header)
    body, header = _binary(_prefixed(*[b""] * n), [n - 1])
    _refused(body, "input 't': binary_data_size has 4 bytes after the last element", header)


@pytest.mark.parametrize(
    ("elements", "shape", "message"),
    [
        # a length prefix that runs past the tensor's bytes, by one and by 4 GiB
        (
            struct.pack("<I", 4) + b"abc",
            [1],
            "input 't': BYTES element 0's length runs past binary_data_size",
        ),
        (
            struct.pack("<I", 0xFFFFFFFF) + b"abcd",
            [2],
            "input 't': BYTES element 0's length runs past binary_data_size",
        ),
        # a first element, then a second whose 4-byte prefix is cut after 2 (the count bound, 8
        # bytes for 2 elements, is met)
        (
            _prefixed(b"abc") + b"\x01\x00",
            [2],
            "input 't': BYTES element 1's length prefix runs past binary_data_size",
        ),
        # the last element one byte short
        (
            _prefixed(b"abc", b"de")[:-1],
            [2],
            "input 't': BYTES element 1's length runs past binary_data_size",
        ),
        (_prefixed(b"abc") + b"zz", [1], "input 't': binary_data_size has 2 bytes after the last element"),
    ],
)
def test_hostile_length_prefixes_are_refused(elements: bytes, shape: list[int], message: str) -> None:
    body, header = _binary(elements, shape)
    _refused(body, message, header)


def test_binary_data_size_beyond_the_body_and_the_limit() -> None:
    body, header = _binary(_prefixed(b"abc"), [1], size=8)
    _refused(body, "input 't': binary_data_size runs past the body", header)
    body, header = _binary(_prefixed(b"abc"), [1], size=-1)
    _refused(body, "input 't': binary_data_size runs past the body", header)
    # per-tensor bytes against the request size limit: N accepted, N-1 refused
    body, header = _binary(_prefixed(b"abc"), [1])
    assert parse_infer_request(body, (), header, 7).inputs["t"].tolist() == [b"abc"]
    _refused(body, "input 't': BYTES elements exceed 6 bytes", header, max_bytes=6)


def test_json_bytes_total_against_the_limit_at_n_and_n_minus_1() -> None:
    body = _json(["abc", "de"], [2])
    assert parse_infer_request(body, (), None, 5).inputs["t"].tolist() == [b"abc", b"de"]
    _refused(body, "input 't': BYTES elements exceed 4 bytes", max_bytes=4)


def test_declared_bytes_inputs_are_checked_like_numeric_ones() -> None:
    declared = (TensorSpec("t", "BYTES", (-1,)),)
    assert parse_infer_request(_json(["a"], [1]), declared).inputs["t"].tolist() == [b"a"]
    _refused(
        _json(["a"], [1, 1]), "input 't': got BYTES [1, 1], the model takes BYTES [-1]", declared=declared
    )
    numeric = b'{"inputs":[{"name":"t","datatype":"FP32","shape":[1],"data":[1.0]}]}'
    _refused(numeric, "input 't': got FP32 [1], the model takes BYTES [-1]", declared=declared)
    _refused(_json(["a"], [1]), "input 't': got BYTES [1], the model takes FP32 [-1]",
             declared=(TensorSpec("t", "FP32", (-1,)),))  # fmt: skip


def test_replies_json_and_binary() -> None:
    outputs = {"y": np.array([b"abc", "é".encode(), b""], dtype=object).reshape(3, 1)}
    chunks, header = encode_reply("m", "r", outputs)
    assert header is None
    body = json.loads(b"".join(chunks))
    assert body["outputs"] == [{"name": "y", "datatype": "BYTES", "shape": [3, 1], "data": ["abc", "é", ""]}]
    chunks, header = encode_reply("m", "r", outputs, frozenset({"y"}))
    raw = b"".join(chunks)
    assert header is not None
    meta = json.loads(raw[:header])["outputs"][0]
    assert meta["parameters"] == {"binary_data_size": 4 * 3 + 5}
    assert raw[header:] == _prefixed(b"abc", "é".encode(), b"")
    # the binary reply parses back as a request would
    request = json.dumps(
        {"inputs": [{k: meta[k] for k in ("name", "datatype", "shape", "parameters")}]}
    ).encode()
    again = parse_infer_request(request + raw[header:], (), len(request))
    assert again.inputs["y"].tolist() == outputs["y"].tolist()


def test_non_utf8_outputs_go_back_only_as_binary() -> None:
    outputs = {"y": np.array([b"\xff"], dtype=object)}
    with pytest.raises(OutputError, match=r"^a BYTES output is not UTF-8 text; request it with binary_data$"):
        encode_reply("m", "r", outputs)
    chunks, _ = encode_reply("m", "r", outputs, frozenset({"y"}))
    assert chunks[-1] == _prefixed(b"\xff")
    with pytest.raises(OutputError, match="other than byte strings"):
        encode_reply("m", "r", {"y": np.array(["text"], dtype=object)})


def test_the_guard_view_and_budget_bytes() -> None:
    tensors = {"t": np.array([b"ab", b"c"], dtype=object).reshape(1, 2), "x": np.zeros(3, np.float32)}
    (view,) = bytes_tensors(tensors)
    assert (view.name, view.shape, list(view.items)) == ("t", (1, 2), [b"ab", b"c"])
    assert tensor_bytes(tensors["t"]) == 3 + 8 and tensor_bytes(tensors["x"]) == 12


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    elements=st.binary(max_size=40)
    | st.lists(st.binary(max_size=5), max_size=6).map(lambda i: _prefixed(*i)),
    shape=st.lists(st.integers(0, 6) | st.sampled_from([2**20, 2**39]), max_size=3),
    cut=st.integers(-6, 6),
)
def test_fuzzed_binary_bytes_only_raise_tensor_error(elements: bytes, shape: list[int], cut: int) -> None:
    body, header = _binary(elements, shape, size=len(elements) + cut)
    try:
        got = parse_infer_request(body, (), header).inputs["t"]
    except TensorError:
        return
    # accepted only when the elements tile the binary section exactly
    assert cut == 0 and list(got.shape) == shape
    assert _prefixed(*got.reshape(-1).tolist()) == elements
