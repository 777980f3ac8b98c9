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


# -- packed BYTES (offsets + one buffer): review 3 F2 ----------------------------------------------


def test_packed_bytes_checks_every_bound_before_use() -> None:
    from airlock.errors import SandboxError
    from airlock.sandbox._messages import PackedBytes

    ends = np.array([1, 1, 3], dtype="<u8").tobytes()
    packed = PackedBytes.checked((3,), ends, b"abc", 3, 3)
    assert packed.items() == [b"a", b"", b"bc"] and packed.size == 3 and packed.nbytes == 24 + 3
    assert tensor_bytes(packed) == 3 + 4 * 3  # the binary size, counted without a step per element
    assert [t.items for t in bytes_tensors({"t": packed})] == [[b"a", b"", b"bc"]]
    refused = [
        ((3,), ends, b"abc", 2, 3),  # more elements than allowed (N+1 over a cap of N)
        ((3,), ends, b"abc", 3, 2),  # blob over its cap
        ((4,), ends, b"abc", 9, 9),  # the shape needs 4 offsets, 3 given
        ((3,), np.array([2, 1, 3], dtype="<u8").tobytes(), b"abc", 3, 3),  # backwards
        ((3,), np.array([1, 1, 2], dtype="<u8").tobytes(), b"abc", 3, 3),  # a trailing byte
        ((3,), np.array([1, 1, 4], dtype="<u8").tobytes(), b"abc", 3, 3),  # past the blob
        ((0,), b"", b"x", 3, 3),  # bytes with no element
        ((2**40, 2**40), ends, b"abc", 3, 3),  # a product checked dimension by dimension
        ((-1,), ends, b"abc", 3, 3),
    ]
    for args in refused:
        with pytest.raises(SandboxError):
            PackedBytes.checked(*args)


def test_the_codecs_bytes_answer_stays_packed_without_an_object_per_element() -> None:
    """A codec's BYTES answer (1 M empty elements) is checked and kept as offsets + blob in the
    gateway: no list, no ``bytes`` object per element (the old rebuild held ~1 M of them); the
    element count is bounded by what a body of the size limit can encode (N ok, N+1 refused)."""
    from airlock.gateway._codec import CodecUnavailable, _flatten_child, _rebuild
    from airlock.sandbox._messages import PackedBytes

    count = 1 << 20
    body, header = _binary(b"\x00\x00\x00\x00" * count, [count])
    request = parse_infer_request(body, (), header, len(body))
    ((_name, dtype, shape, data),) = _flatten_child(request.inputs)
    assert isinstance(data, tuple) and [len(b) for b in data] == [8 * count, 0]
    tracemalloc.start()
    try:
        rebuilt = _rebuild(dtype, shape, data, len(body))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(rebuilt, PackedBytes) and rebuilt.shape == (count,)
    # vectorised checks take a few bytes per element (the order check's mask); an object per
    # element (the old rebuild: a list and ~1 M ``bytes``) takes over 40
    assert peak < 4 * count, peak
    with pytest.raises(CodecUnavailable):  # more elements than a body of that size could encode
        _rebuild(dtype, shape, data, 2 * count - 1)
    assert isinstance(_rebuild(dtype, shape, data, 2 * count), PackedBytes)


def test_the_worker_frame_carries_packed_bytes_both_ways() -> None:
    from airlock.errors import SandboxError
    from airlock.sandbox._messages import PackedBytes, TensorCaps, decode_tensors, encode_tensors

    array = np.empty(3, dtype=object)
    array[:] = [b"x", b"", "\u00e9"]
    caps = TensorCaps(8, 8)
    for sent in (array, PackedBytes.pack("t", array)):
        specs, buffers = encode_tensors([("t", sent)])
        payload = memoryview(b"".join(bytes(b) for b in buffers))
        packed = decode_tensors(specs, payload, caps, packed=True)["t"]
        assert isinstance(packed, PackedBytes) and packed.items() == [b"x", b"", "\u00e9".encode()]
        assert decode_tensors(specs, payload, caps)["t"].tolist() == [b"x", b"", "\u00e9".encode()]
    specs, buffers = encode_tensors([("t", array)])
    table = bytearray(b"".join(bytes(b) for b in buffers))
    table[0:8] = (2).to_bytes(8, "little")  # element 0 ends after element 1: backwards
    with pytest.raises(SandboxError, match="backwards"):
        decode_tensors(specs, memoryview(bytes(table)), caps, packed=True)


@pytest.mark.parametrize("extra", [0, 1])
def test_json_bytes_element_count_is_bounded_by_half_the_body(extra: int) -> None:
    body = _json(["a"], [0])
    count = len(body) // 2 + extra  # at most 2 bytes ("",) an element in the body
    body = _json(["a"], [count])
    limit = len(body)
    message = "more elements than the body can hold" if limit // 2 < count else "data has 1 elements"
    with pytest.raises(TensorError, match=message):
        parse_infer_request(body, (), None, limit)
