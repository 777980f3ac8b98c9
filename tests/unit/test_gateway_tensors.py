"""KServe v2 tensors checked before anything reaches a worker (src/airlock/gateway/_tensors.py), as a
table: every datatype at its limits (the largest value that fits, the next one), every count and
length bound at N-1/N/N+1, the binary extension's framing, and each refusal's fixed phrase.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from airlock.gateway._config import DATATYPES, TensorSpec
from airlock.gateway._tensors import (
    MAX_BINARY_HEADER,
    OutputError,
    TensorError,
    encode_outputs,
    encode_reply,
    parse_infer_request,
)


def _one(datatype: str, data: str, shape: str = "[1]", name: str = "x") -> bytes:
    return f'{{"inputs": [{{"name": "{name}", "datatype": "{datatype}", "shape": {shape}, "data": {data}}}]}}'.encode()


def _refused(
    body: bytes, message: str, declared: tuple[TensorSpec, ...] = (), header: int | None = None
) -> None:
    with pytest.raises(TensorError) as caught:
        parse_infer_request(body, declared, header)
    assert str(caught.value) == message


INTS = [(name, np.iinfo(np.dtype(code))) for name, code in DATATYPES.items() if np.dtype(code).kind in "iu"]


@pytest.mark.parametrize("datatype, info", INTS, ids=[d for d, _ in INTS])
def test_integers_at_their_limits(datatype: str, info: Any) -> None:
    for value in (info.min, info.max, 0):
        got = parse_infer_request(_one(datatype, f"[{value}]"), ()).inputs["x"]
        assert got.tolist() == [value] and got.dtype == np.dtype(DATATYPES[datatype])
    # one past either end: refused, whichever way numpy would have guessed the list's type
    for value in (info.max + 1, info.min - 1):
        with pytest.raises(TensorError) as caught:
            parse_infer_request(_one(datatype, f"[{value}]"), ())
        assert "out of range for " + datatype in str(caught.value)
    # next to a small value too (numpy then guesses float64 or object for big ones)
    with pytest.raises(TensorError):
        parse_infer_request(_one(datatype, f"[1, {info.max + 1}]", "[2]"), ())
    assert parse_infer_request(_one(datatype, f"[1, {info.max}]", "[2]"), ()).inputs["x"].tolist() == [
        1,
        info.max,
    ]


@pytest.mark.parametrize(
    "datatype, value, message",
    [
        ("INT8", "128", "input 'x': a value is out of range for INT8"),
        ("INT8", "-129", "input 'x': a value is out of range for INT8"),
        ("UINT8", "-1", "input 'x': a value is out of range for UINT8"),
        ("UINT64", str(2**64), "input 'x': a value is out of range for UINT64"),
        ("INT64", str(2**63), "input 'x': a value is out of range for INT64"),
        ("INT64", str(2**64), "input 'x': a value is out of range for INT64"),
        ("INT32", "1.5", "input 'x': data holds a value that is not an integer, or out of range for INT32"),
        ("BOOL", "1", "input 'x': data holds values of the wrong kind for BOOL"),
        ("BOOL", "1.0", "input 'x': data holds values of the wrong kind for BOOL"),
        ("FP32", '"a"', "input 'x': data holds values of the wrong kind for FP32"),
        ("FP16", "65520", "input 'x': a value overflows FP16"),
        ("FP32", "3.5e38", "input 'x': a value overflows FP32"),
        ("FP32", "1e400", "input 'x': a number is out of range for FP32"),
        ("FP64", "-1e400", "input 'x': a number is out of range for FP64"),
        ("FP64", "1e309", "input 'x': a number is out of range for FP64"),
    ],
)  # fmt: skip
def test_values_out_of_range_or_of_the_wrong_kind(datatype: str, value: str, message: str) -> None:
    _refused(_one(datatype, f"[{value}]"), message)


@pytest.mark.parametrize(
    "datatype, value, expected",
    [
        ("FP16", "65504", 65504.0),
        ("FP32", "3.4028234663852886e38", 3.4028234663852886e38),
        ("FP64", "1.7976931348623157e308", 1.7976931348623157e308),
        ("FP32", "1", 1.0),  # integers are floats' values too
        ("FP64", "true", 1.0),  # and booleans
        ("INT8", "true", 1),
        ("BOOL", "false", False),
        ("UINT64", str(2**63), 2**63),
    ],
)
def test_values_that_fit(datatype: str, value: str, expected: object) -> None:
    assert parse_infer_request(_one(datatype, f"[{value}]"), ()).inputs["x"].tolist() == [expected]


@pytest.mark.parametrize(
    "data, message",
    [
        ("[1, 2**70]", "request body is not valid JSON"),
        (
            f"[1.5, {2**70}]",
            "input 'x': data holds a value that is not an integer, or out of range for INT64",
        ),
        (f"[1, {2**70}]", "input 'x': a value is out of range for INT64"),
        ('[1, "2"]', "input 'x': data holds values of the wrong kind for INT64"),  # numpy: strings
        ("[1, null]", "input 'x': data holds a value that is not an integer, or out of range for INT64"),
        ("[1, [2]]", "input 'x': data is ragged or not numeric"),
        ("[[1], [2, 3]]", "input 'x': data is ragged or not numeric"),
        ("{}", "input 'x': data must be a JSON array"),
    ],
)
def test_mixed_lists_are_judged_value_by_value(data: str, message: str) -> None:
    _refused(_one("INT64", data, "[2]"), message)


def test_floats_beyond_float64_among_integers() -> None:
    _refused(_one("FP32", f"[1, {2**1100}]", "[2]"), "input 'x': a number is out of range for FP32")
    assert parse_infer_request(_one("FP64", f"[1, {2**70}]", "[2]"), ()).inputs["x"].tolist() == [
        1.0,
        2.0**70,
    ]


@pytest.mark.parametrize(
    "shape, message",
    [
        ("[-1]", "input 'x': shape must be a list of non-negative integers"),
        ("[1.0]", "input 'x': shape must be a list of non-negative integers"),
        ("[true]", "input 'x': shape must be a list of non-negative integers"),
        ("1", "input 'x': shape must be a list of non-negative integers"),
        ("[" + ", ".join(["1"] * 33) + "]", "input 'x': rank exceeds 32"),
        (f"[{2**40 + 1}]", f"input 'x': shape exceeds {2**40} elements"),
        (f"[{10**30}, 0]", f"input 'x': shape exceeds {2**40} elements"),
        (f"[{2**20}, {2**20 + 1}]", f"input 'x': shape exceeds {2**40} elements"),
        (f"[{2**40}]", f"input 'x': data has 1 elements, shape [{2**40}] needs {2**40}"),
        (f"[{2**20}, 0, {2**20}]", "input 'x': data has 1 elements, shape [1048576, 0, 1048576] needs 0"),
        ("[2]", "input 'x': data has 1 elements, shape [2] needs 2"),
    ],
)
def test_shapes(shape: str, message: str) -> None:
    _refused(_one("INT8", "[1]", shape), message)


def test_rank_32_and_empty_tensors_are_accepted() -> None:
    assert (
        parse_infer_request(_one("INT8", "[1]", "[" + ", ".join(["1"] * 32) + "]"), ()).inputs["x"].ndim == 32
    )
    empty = parse_infer_request(_one("FP32", "[]", f"[{2**20}, 0]"), ()).inputs["x"]
    assert empty.shape == (2**20, 0) and empty.dtype == np.float32


def _inputs(n: int) -> bytes:
    items = [{"name": f"i{k}", "datatype": "INT8", "shape": [1], "data": [1]} for k in range(n)]
    return json.dumps({"inputs": items}).encode()


@pytest.mark.parametrize("n, ok", [(63, True), (64, True), (65, False)])
def test_input_count_at_n_minus_1_n_n_plus_1(n: int, ok: bool) -> None:
    if ok:
        assert len(parse_infer_request(_inputs(n), ()).inputs) == n
    else:
        _refused(_inputs(n), "more than 64 inputs")


@pytest.mark.parametrize("length, ok", [(255, True), (256, True), (257, False), (0, False)])
def test_input_name_length(length: int, ok: bool) -> None:
    body = _one("INT8", "[1]", name="n" * length)
    if ok:
        assert list(parse_infer_request(body, ()).inputs) == ["n" * length]
    else:
        _refused(body, "inputs[0].name must be a string of 1..256 characters")


@pytest.mark.parametrize("length, ok", [(127, True), (128, True), (129, False)])
def test_request_id_length(length: int, ok: bool) -> None:
    body = json.dumps(
        {"id": "i" * length, "inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}]}
    )
    if ok:
        assert parse_infer_request(body.encode(), ()).id == "i" * length
    else:
        _refused(body.encode(), "id must be a string of at most 128 characters")


X = {"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}


@pytest.mark.parametrize(
    "request_, message",
    [
        ([], "request body must be a JSON object"),
        ({"inputs": [X], "extra": 1}, "request has unknown fields (allowed: id, inputs, outputs, parameters)"),
        ({"inputs": [X], "id": 5}, "id must be a string of at most 128 characters"),
        ({"inputs": []}, "inputs must be a non-empty array"),
        ({"inputs": {}}, "inputs must be a non-empty array"),
        ({}, "inputs must be a non-empty array"),
        ({"inputs": [1]}, "inputs[0] must be an object"),
        ({"inputs": [{**X, "extra": 1}]}, "inputs[0] has unknown fields (allowed: name, shape, datatype, data, parameters)"),
        ({"inputs": [{**X, "name": 5}]}, "inputs[0].name must be a string of 1..256 characters"),
        ({"inputs": [{**X, "datatype": "FP128"}]},
         "input 'x': datatype is not one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES"),
        ({"inputs": [X, X]}, "input 'x' appears twice"),
        ({"inputs": [X], "parameters": []}, "request.parameters must be an object"),
        ({"inputs": [X], "parameters": {"a": 1}}, "request.parameters has an unknown key (allowed: binary_data_output)"),
        ({"inputs": [X], "parameters": {"binary_data_output": 1}}, "request.parameters.binary_data_output must be a bool"),
        ({"inputs": [{**X, "parameters": {"binary_data_size": True}}]}, "inputs[0].parameters.binary_data_size must be a int"),
        ({"inputs": [{**X, "parameters": {"binary_data_size": 1}}]},
         "input 'x': binary_data_size needs Inference-Header-Content-Length"),
        ({"inputs": [X], "outputs": {}}, "outputs must be an array of at most 64 objects"),
        ({"inputs": [X], "outputs": [{"name": "y"}] * 65}, "outputs must be an array of at most 64 objects"),
        ({"inputs": [X], "outputs": [1]}, "outputs[0] must be an object with name and parameters"),
        ({"inputs": [X], "outputs": [{"name": "y", "x": 1}]}, "outputs[0] must be an object with name and parameters"),
        ({"inputs": [X], "outputs": [{"name": ""}]}, "outputs[0].name must be a string of 1..256 characters"),
        ({"inputs": [X], "outputs": [{"name": "y" * 257}]}, "outputs[0].name must be a string of 1..256 characters"),
        ({"inputs": [X], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]},
         "outputs[0].parameters.binary_data must be a bool"),
    ],
)  # fmt: skip
def test_malformed_requests(request_: object, message: str) -> None:
    _refused(json.dumps(request_).encode(), message)


def test_outputs_and_binary_output_flags() -> None:
    outputs = [{"name": "y" * 256}, {"name": "z", "parameters": {"binary_data": True}}] + [{"name": "w"}] * 62
    parsed = parse_infer_request(json.dumps({"inputs": [X], "outputs": outputs}).encode(), ())
    assert parsed.outputs[:2] == (("y" * 256, False), ("z", True)) and len(parsed.outputs) == 64
    assert parsed.binary_output is False
    parsed = parse_infer_request(
        json.dumps({"inputs": [X], "parameters": {"binary_data_output": True}}).encode(), ()
    )
    assert (parsed.outputs, parsed.binary_output, parsed.id) == ((), True, None)


def test_declared_inputs_are_enforced() -> None:
    declared = (TensorSpec("x", "INT8", (-1, 2)),)
    ok = parse_infer_request(_one("INT8", "[1, 2, 3, 4]", "[2, 2]"), declared)
    assert ok.inputs["x"].shape == (2, 2)
    _refused(_one("INT8", "[1, 2]", "[2]"), "input 'x': got INT8 [2], the model takes INT8 [-1, 2]", declared)
    _refused(
        _one("INT8", "[1, 2, 3]", "[1, 3]"),
        "input 'x': got INT8 [1, 3], the model takes INT8 [-1, 2]",
        declared,
    )
    _refused(
        _one("INT16", "[1, 2]", "[1, 2]"),
        "input 'x': got INT16 [1, 2], the model takes INT8 [-1, 2]",
        declared,
    )
    _refused(_one("INT8", "[1, 2]", "[1, 2]", name="y"), "inputs are ['y'], the model takes ['x']", declared)
    two = json.dumps({"inputs": [{**X, "shape": [1, 2], "data": [1, 2]}, {**X, "name": "z"}]}).encode()
    _refused(two, "inputs are ['x', 'z'], the model takes ['x']", declared)


def _binary(inputs: list[dict[str, Any]], raw: bytes, **extra: Any) -> tuple[bytes, int]:
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + raw, len(header)


def test_binary_round_trip_is_a_view_of_the_body() -> None:
    x = np.arange(6, dtype="<f4").reshape(2, 3)
    body, length = _binary(
        [{"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
         {"name": "b", "datatype": "BOOL", "shape": [2], "parameters": {"binary_data_size": 2}},
         {"name": "j", "datatype": "INT8", "shape": [1], "data": [7]}],
        x.tobytes() + b"\x01\x00",
    )  # fmt: skip
    parsed = parse_infer_request(body, (), length)
    assert np.array_equal(parsed.inputs["x"], x) and parsed.inputs["b"].tolist() == [True, False]
    assert parsed.inputs["j"].tolist() == [7]


@pytest.mark.parametrize(
    "size, raw, message",
    [
        (15, bytes(16), "input 'x': binary_data_size must be 16 bytes for FP32 [1, 4], within the body"),
        (17, bytes(17), "input 'x': binary_data_size must be 16 bytes for FP32 [1, 4], within the body"),
        (16, bytes(15), "input 'x': binary_data_size must be 16 bytes for FP32 [1, 4], within the body"),
        (16, bytes(17), "the binary section's length differs from the sum of binary_data_size"),
        (16, np.array([1, 2, 3, np.nan], dtype="<f4").tobytes(), "input 'x': NaN and infinite values are not accepted"),
        (16, np.array([1, 2, 3, -np.inf], dtype="<f4").tobytes(), "input 'x': NaN and infinite values are not accepted"),
    ],
)  # fmt: skip
def test_binary_sizes_and_values(size: int, raw: bytes, message: str) -> None:
    body, length = _binary(
        [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": size}}], raw
    )
    _refused(body, message, header=length)


def test_binary_bool_bytes_and_data_together() -> None:
    spec = {"name": "b", "datatype": "BOOL", "shape": [2], "parameters": {"binary_data_size": 2}}
    body, length = _binary([spec], b"\x01\x02")
    _refused(body, "input 'b': BOOL bytes must be 0 or 1", header=length)
    body, length = _binary([{**spec, "data": [True, False]}], b"\x01\x00")
    _refused(body, "input 'b': binary_data_size and data exclude each other", header=length)


@pytest.mark.parametrize("delta, ok", [(-1, False), (0, True)])
def test_binary_header_length_within_the_body(delta: int, ok: bool) -> None:
    body, length = _binary(
        [{"name": "x", "datatype": "INT8", "shape": [1], "parameters": {"binary_data_size": 1}}], b"\x05"
    )
    if ok:
        assert parse_infer_request(body, (), length).inputs["x"].tolist() == [5]
    else:
        _refused(body, "inference header is not valid JSON", header=length + delta)


@pytest.mark.parametrize("header", [0, -1, "past-the-body", MAX_BINARY_HEADER + 1])
def test_binary_header_length_bounds(header: object) -> None:
    body = b"{" + b" " * (MAX_BINARY_HEADER + 8) + b"}"
    length = len(body) + 1 if header == "past-the-body" else header
    assert isinstance(length, int)
    _refused(
        body if header != "past-the-body" else b"{}", f"Inference-Header-Content-Length must be 1..{MAX_BINARY_HEADER} and within the body",
        header=length if header != "past-the-body" else 3,
    )  # fmt: skip


def test_binary_header_at_its_bound_is_read() -> None:
    inputs = [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}]
    header = json.dumps({"inputs": inputs}).encode()
    header += b" " * (MAX_BINARY_HEADER - len(header))
    assert len(header) == MAX_BINARY_HEADER
    assert parse_infer_request(header, (), MAX_BINARY_HEADER).inputs["x"].tolist() == [1]
    _refused(
        header + b" ",
        f"Inference-Header-Content-Length must be 1..{MAX_BINARY_HEADER} and within the body",
        header=MAX_BINARY_HEADER + 1,
    )
    _refused(b"[1]", "inference header must be a JSON object", header=3)


# replies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])  # BYTES: test_gateway_bytes.py
def test_every_datatype_encodes_by_name(datatype: str) -> None:
    array = np.zeros(2, dtype=DATATYPES[datatype])
    (out,) = encode_outputs({"y": array})
    assert (out["name"], out["datatype"], out["shape"]) == ("y", datatype, [2])
    big = array.astype(np.dtype(DATATYPES[datatype]).newbyteorder(">"))
    assert encode_outputs({"y": big})[0]["datatype"] == datatype  # big-endian arrays by their value type


@pytest.mark.parametrize("dtype", [np.complex64, "<U2", "<M8[s]"])
def test_outputs_without_a_kserve_datatype_are_refused(dtype: Any) -> None:
    with pytest.raises(OutputError) as caught:
        encode_outputs({"y": np.zeros(1, dtype=dtype)})
    assert str(caught.value) == "an output dtype has no KServe datatype"


def test_object_outputs_must_hold_byte_strings() -> None:
    """Object arrays are BYTES outputs now: anything but bytes in them is still refused."""
    with pytest.raises(OutputError) as caught:
        encode_outputs({"y": np.zeros(1, dtype=np.object_)})
    assert str(caught.value) == "a BYTES output holds something other than byte strings"


def test_non_finite_outputs_become_null() -> None:
    (out,) = encode_outputs({"y": np.array([1.5, np.nan, np.inf, -np.inf], dtype=np.float32)})
    assert out["data"] == [1.5, None, None, None]
    assert encode_outputs({"y": np.zeros((2, 0), dtype=np.float32)})[0] == {
        "name": "y", "datatype": "FP32", "shape": [2, 0], "data": [],
    }  # fmt: skip


def test_reply_known_answer() -> None:
    y = np.array([[1, 2]], dtype=np.int16)
    s = np.array([2.5, 3.0], dtype=">f8")  # big-endian: sent little-endian
    chunks, header = encode_reply("m", "r", {"y": y, "s": s}, frozenset({"s"}))
    text = (
        b'{"model_name":"m","id":"r","outputs":[{"name":"y","datatype":"INT16","shape":[1,2],"data":[1,2]},'
    )
    text += b'{"name":"s","datatype":"FP64","shape":[2],"parameters":{"binary_data_size":16}}]}'
    assert bytes(chunks[0]) == text and header == len(text)
    assert b"".join(bytes(c) for c in chunks[1:]) == np.array([2.5, 3.0], dtype="<f8").tobytes()
    chunks, header = encode_reply("m", "r", {"y": y})
    assert header is None and len(chunks) == 1
    assert json.loads(bytes(chunks[0]))["outputs"][0]["data"] == [1, 2]


def test_non_contiguous_binary_outputs_are_sent_in_order() -> None:
    y = np.arange(12, dtype="<i4").reshape(3, 4)[:, ::2]
    chunks, _ = encode_reply("m", "r", {"y": y}, frozenset({"y"}))
    assert b"".join(bytes(c) for c in chunks[1:]) == np.ascontiguousarray(y).tobytes()


@pytest.mark.parametrize("datatype, info", INTS, ids=[d for d, _ in INTS])
def test_both_limits_in_one_list_and_in_two_dimensions(datatype: str, info: Any) -> None:
    """[min, max] of UINT64 is float64 to numpy's guess, so it is decided value by value: both
    ends are still in range, and the shape is kept."""
    got = parse_infer_request(_one(datatype, f"[[{info.min}, {info.max}]]", "[1, 2]"), ()).inputs["x"]
    assert got.tolist() == [[info.min, info.max]] and got.shape == (1, 2)


def test_floats_decided_value_by_value_keep_their_values_and_shape() -> None:
    got = parse_infer_request(_one("FP64", f"[[1.5, {2**70}]]", "[1, 2]"), ()).inputs["x"]
    assert got.tolist() == [[1.5, 2.0**70]] and got.dtype == np.float64 and got.shape == (1, 2)
    _refused(_one("FP64", f"[{2**70}, null]", "[2]"), "input 'x': data is ragged or not numeric")


def test_overflow_into_a_datatype_is_an_error_never_a_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _refused(_one("FP16", "[70000.0]"), "input 'x': a value overflows FP16")


def test_a_one_byte_binary_header_is_read() -> None:
    _refused(b"1", "inference header must be a JSON object", header=1)
