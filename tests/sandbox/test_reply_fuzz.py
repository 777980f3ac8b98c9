"""Fuzz the host's reply decoder: whatever a job sends, only SandboxError may come out.

Frames are written to a real socket pair and read with the host's settings (no fds accepted, a
deadline); headers go through the schema check and tensor tables through ``decode_tensors``,
exactly as :class:`airlock.sandbox.Worker` does with a reply.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlock.errors import SandboxError
from airlock.sandbox._frames import FrameCaps, recv_frame
from airlock.sandbox._messages import DTYPES, TensorCaps, check_header, decode_tensors

CAPS = FrameCaps(max_header_bytes=1 << 16, max_frame_bytes=1 << 20)
TCAPS = TensorCaps(max_tensors=8, max_rank=32)  # max_bytes: the default bound

_ints = st.one_of(
    st.integers(min_value=-3, max_value=64),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31, 2**32, 2**40, 2**62, 2**63, 2**64, 10**4000, -(10**4000)]),
)
_scalars = st.one_of(st.none(), st.booleans(), _ints, st.floats(allow_nan=False), st.text(max_size=8))
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_shape = st.one_of(st.lists(_ints, max_size=34), _json)
_spec = st.fixed_dictionaries(
    {
        "name": st.one_of(st.text(min_size=0, max_size=6), _json),
        "dtype": st.one_of(st.sampled_from(sorted(DTYPES)), _json),
        "shape": _shape,
        "offset": st.one_of(_ints, _json),
        "nbytes": st.one_of(_ints, _json),
    }
)
_table = st.one_of(st.lists(_spec, max_size=4), _json)


def _decode_reply(header: dict[str, object], payload: memoryview) -> dict[str, Any]:
    kind = check_header(header, ("tensors", "error", "loaded", "ready"))
    if kind == "tensors":
        return decode_tensors(header["tensors"], payload, TCAPS)
    return {}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=_table, payload=st.binary(max_size=64))
def test_tensor_tables_only_raise_sandbox_error(table: object, payload: bytes) -> None:
    try:
        arrays = decode_tensors(table, memoryview(payload), TCAPS)
    except SandboxError:
        return
    total = sum(a.nbytes for a in arrays.values())
    assert total == len(payload)
    for name, array in arrays.items():
        assert name.isprintable() and isinstance(array, np.ndarray)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dims=st.lists(
        st.one_of(
            st.just(0), st.integers(min_value=1, max_value=2**70), st.sampled_from([2**40, 2**63, 10**4000])
        ),
        min_size=1,
        max_size=32,
    ),
    zero_at=st.integers(min_value=0, max_value=31),
    dtype=st.sampled_from(sorted(DTYPES)),
)
def test_empty_tensors_with_absurd_shapes_only_raise_sandbox_error(
    dims: list[int], zero_at: int, dtype: str
) -> None:
    """A zero anywhere makes the size 0, so the byte count checks pass: the shape itself must be bounded."""
    dims[zero_at % len(dims)] = 0
    table = [{"name": "t", "dtype": dtype, "shape": dims, "offset": 0, "nbytes": 0}]
    try:
        arrays = decode_tensors(table, memoryview(b""), TCAPS)
    except SandboxError:
        return
    assert arrays["t"].size == 0 and list(arrays["t"].shape) == dims


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.one_of(
        st.dictionaries(st.sampled_from(["type", "tensors", "kind", "x"]), _json, max_size=3), _json
    ),
    kind=st.sampled_from(["tensors", "error", "loaded", "bogus"]),
    payload=st.binary(max_size=64),
    claim=st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1)),
    cut=st.integers(min_value=0, max_value=200),
)
def test_raw_frames_only_raise_sandbox_error(
    header: object, kind: str, payload: bytes, claim: int | None, cut: int
) -> None:
    if isinstance(header, dict):
        header = {"type": kind, **header}
    try:
        raw = json.dumps(header).encode()
    except (ValueError, OverflowError):
        raw = b"{"
    data = struct.pack("<4sIQ", b"ALF1", len(raw), len(payload) if claim is None else claim) + raw + payload
    if cut % 3 == 0:
        data = data[: max(1, len(data) - cut)]  # truncated frames too
    a, b = socket.socketpair()
    try:
        b.sendall(data)
        b.close()
        try:
            frame = recv_frame(a, CAPS, accept_fds=False, deadline=time.monotonic() + 5)
            _decode_reply(frame.header, frame.payload)
        except SandboxError:
            pass
    finally:
        a.close()
