"""The channel: frames, schemas and tensor tables reject anything malformed, before allocating."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest

from airlock.errors import SandboxError
from airlock.sandbox._frames import FrameCaps, recv_frame, send_frame
from airlock.sandbox._messages import TensorCaps, check_header, decode_tensors, encode_tensors

CAPS = FrameCaps(max_header_bytes=1024, max_frame_bytes=1 << 20)
TCAPS = TensorCaps(max_tensors=4, max_rank=3)


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    return a, b


def test_round_trip_with_tensors_and_fds() -> None:
    a, b = _pair()
    arrays: list[tuple[str, np.ndarray]] = [
        ("x", np.arange(6, dtype=np.int32).reshape(2, 3)),
        ("s", np.asarray(np.float64(2.5))),
    ]
    specs, buffers = encode_tensors(arrays)
    r, w = socket.socketpair()
    send_frame(a, {"type": "tensors", "tensors": specs}, buffers, fds=[r.fileno()])
    frame = recv_frame(b, CAPS)
    assert check_header(frame.header, ("tensors",)) == "tensors"
    got = decode_tensors(frame.header["tensors"], frame.payload, TCAPS)
    np.testing.assert_array_equal(got["x"], arrays[0][1])
    assert got["s"].shape == ()
    assert len(frame.fds) == 1
    for s in (a, b, r, w):
        s.close()


def test_oversized_frame_is_refused_before_allocation() -> None:
    a, b = _pair()
    a.sendall(struct.pack("<4sIQ", b"ALF1", 10, 1 << 40))
    with pytest.raises(SandboxError, match="exceeds the cap of 1048576"):
        recv_frame(b, CAPS)


def test_bad_magic_and_bad_json_are_refused() -> None:
    a, b = _pair()
    a.sendall(struct.pack("<4sIQ", b"PKL\x80", 2, 0) + b"{}")
    with pytest.raises(SandboxError, match="magic"):
        recv_frame(b, CAPS)
    a, b = _pair()
    body = b'{"type":"close","type":"x"}'
    a.sendall(struct.pack("<4sIQ", b"ALF1", len(body), 0) + body)
    with pytest.raises(SandboxError, match="duplicate JSON key"):
        recv_frame(b, CAPS)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"type": "load", "runtime": "torch", "definition": None}, "expected exactly"),
        ({"type": "load", "runtime": 1, "definition": None, "threads": 1}, "runtime must be str"),
        ({"type": "shell"}, "not one of"),
        ({"type": "ready", "pid": True, "layers": ""}, "pid must be int"),
    ],
)
def test_schema_violations(header: dict[str, object], message: str) -> None:
    with pytest.raises(SandboxError, match=message):
        check_header(header, ("load", "ready"))


def _spec(**changes: object) -> list[object]:
    spec: dict[str, object] = {"name": "t", "dtype": "float32", "shape": [2], "offset": 0, "nbytes": 8}
    spec.update(changes)
    return [spec]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (_spec(dtype="object"), "dtype 'object' is not one of"),
        (_spec(shape=[1, 1, 1, 2], nbytes=8), "rank 4, the cap is 3"),
        (_spec(nbytes=12), "nbytes 12, shape and dtype need 8"),
        (_spec(offset=4), "starts at 4, expected 0"),
        (_spec(shape=[-1]), "non-negative"),
        (
            [{"name": f"t{i}", "dtype": "uint8", "shape": [0], "offset": 0, "nbytes": 0} for i in range(5)],
            "5 tensors",
        ),
        (_spec(shape=[4], nbytes=16), "ends at 16, payload has 8"),
    ],
)
def test_tensor_table_violations(specs: list[object], message: str) -> None:
    with pytest.raises(SandboxError, match=message):
        decode_tensors(specs, memoryview(bytes(8)), TCAPS)


def test_object_arrays_cannot_be_sent() -> None:
    with pytest.raises(SandboxError, match="cannot cross the channel"):
        encode_tensors([("o", np.array([object()], dtype=object))])
