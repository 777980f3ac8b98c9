"""Byte-string tensors on the job channel (dtype ``bytes``: u64 end offsets + blob, never pickle).

The host decodes what a job sends as hostile: element counts bounded by the region (8 bytes an
element) before anything is allocated, ends that go backwards (overlap) or past the blob, bytes
left after the last element — each a SandboxError. Fuzzed tables and payloads raise nothing else;
a real hostile job (a torch payload speaking the frame protocol itself) gets the same answer.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airlock.errors import SandboxError
from airlock.sandbox import Sandbox, SandboxPolicy
from airlock.sandbox._messages import (
    BYTES_DTYPE,
    HOST_BYTES_PER_ELEMENT,
    TensorCaps,
    decode_tensors,
    encode_tensors,
)
from tests.sandbox.conftest import FAST_LIMITS
from tests.sandbox.test_host_side import hostile

TCAPS = TensorCaps(max_tensors=8, max_rank=8)


def _table(shape: list[int], nbytes: int, offset: int = 0, name: str = "s") -> list[object]:
    return [{"name": name, "dtype": BYTES_DTYPE, "shape": shape, "offset": offset, "nbytes": nbytes}]


def _region(ends: list[int], blob: bytes) -> bytes:
    return struct.pack(f"<{len(ends)}Q", *ends) + blob


def test_round_trip_of_text_and_bytes() -> None:
    arrays = [
        ("t", np.array(["héllo", "", "a\x00b"], dtype=object)),
        ("b", np.array([[b"\xff", b""], [b"xy", b"z"]], dtype=object)),
        ("u", np.array(["ab", "c"])),  # a numpy str array crosses as UTF-8 too
        ("n", np.arange(3, dtype=np.int16)),
        ("e", np.zeros((0, 2), dtype=object)),
    ]
    specs, buffers = encode_tensors(arrays)
    payload = memoryview(b"".join(bytes(b) for b in buffers))
    got = decode_tensors(specs, payload, TCAPS)
    assert got["t"].tolist() == ["héllo".encode(), b"", b"a\x00b"]
    assert got["b"].shape == (2, 2) and got["b"].tolist() == [[b"\xff", b""], [b"xy", b"z"]]
    assert got["u"].tolist() == [b"ab", b"c"] and got["n"].tolist() == [0, 1, 2]
    assert got["e"].shape == (0, 2) and got["e"].dtype == object


def test_what_cannot_cross() -> None:
    with pytest.raises(SandboxError, match="not valid Unicode"):
        encode_tensors([("t", np.array(["\ud800"], dtype=object))])
    with pytest.raises(SandboxError, match="holds a int, which cannot cross the channel"):
        encode_tensors([("t", np.array([b"a", 1], dtype=object))])


@pytest.mark.parametrize(
    ("table", "payload", "message"),
    [
        # ends go backwards: element 1 would overlap element 0
        (_table([2], 16 + 3), _region([3, 1], b"abc"), "go backwards"),
        # the last end runs past the blob, by one
        (_table([2], 16 + 3), _region([1, 4], b"abc"), "elements end at 4, its blob has 3 bytes"),
        # the last end stops short: trailing bytes
        (_table([2], 16 + 3), _region([1, 2], b"abc"), "elements end at 2, its blob has 3 bytes"),
        # a first end past the blob (2**64-1) while the last is exact
        (_table([2], 16 + 3), _region([2**64 - 1, 3], b"abc"), "go backwards"),
        # a count the region cannot hold: 9 elements need 72 bytes of offsets
        (_table([9], 64), bytes(64), "of 9 elements needs 72 bytes of offsets, its region has 64"),
        # a huge declared count with a tiny region, and an absurd shape
        (
            _table([2**20], 8),
            bytes(8),
            "of 1048576 elements needs 8388608 bytes of offsets, its region has 8",
        ),
        (_table([2**61], 8), bytes(8), "spans more than"),
        (_table([2**62, 0], 0), b"", "spans more than"),
        (_table([1], 9, offset=1), bytes(10), "starts at 1, expected 0"),
        (_table([1], 16), _region([8], b"abcdefg"), "ends at 16, payload has 15"),
        (_table([1], 8 + 3), _region([3], b"abc") + b"!", "tensors cover 11 bytes, payload has 12"),
    ],
)
def test_hostile_bytes_tables_are_sandbox_errors(table: list[object], payload: bytes, message: str) -> None:
    with pytest.raises(SandboxError, match=message):
        decode_tensors(table, memoryview(payload), TCAPS)
    with pytest.raises(SandboxError):  # kept packed (the gateway's form): refused the same
        decode_tensors(table, memoryview(payload), TCAPS, packed=True)


def test_exact_count_at_n_minus_1_n_n_plus_1() -> None:
    """n empty elements need exactly 8n bytes of offsets."""
    n = 6
    region = _region([0] * n, b"")
    assert decode_tensors(_table([n], len(region)), memoryview(region), TCAPS)["s"].tolist() == [b""] * n
    with pytest.raises(SandboxError, match="of 7 elements needs 56 bytes of offsets, its region has 48"):
        decode_tensors(_table([n + 1], len(region)), memoryview(region), TCAPS)
    with pytest.raises(SandboxError, match="elements end at 0, its blob has 8 bytes"):
        decode_tensors(_table([n - 1], len(region)), memoryview(region), TCAPS)


def test_a_huge_claimed_count_allocates_nothing() -> None:
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(SandboxError):
            decode_tensors(_table([2**40], 16), memoryview(bytes(16)), TensorCaps(8, 8, 1 << 30))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20 and time.perf_counter() - started < 1.0


@pytest.mark.parametrize(("slack", "ok"), [(-1, False), (0, True), (1, True)])
def test_decoded_objects_are_charged_against_the_frame_cap(slack: int, ok: bool) -> None:
    """Ten elements of 6 bytes in all (two tensors) cost 10 * HOST_BYTES_PER_ELEMENT + 2 * 6 on the
    host: at a cap of exactly that they decode, one byte under it they are refused (outside review
    11: 8-byte empty elements became ~100-byte objects, so a reply under the cap held ten times it)."""
    first, second = _region([1, 2, 3, 4], b"abcd"), _region([0] * 5 + [2], b"ef")
    table = _table([4], len(first), name="a") + _table([2, 3], len(second), offset=len(first), name="b")
    payload = memoryview(first + second)
    cost = 10 * HOST_BYTES_PER_ELEMENT + 2 * 6
    caps = TensorCaps(8, 8, cost + slack)
    if ok:
        got = decode_tensors(table, payload, caps)
        assert got["a"].tolist() == [b"a", b"b", b"c", b"d"]
        assert got["b"].tolist() == [[b"", b"", b""], [b"", b"", b"ef"]]
    else:
        with pytest.raises(
            SandboxError, match=rf"tensor 'b' of 6 elements would hold {cost} bytes .* cap of {cost - 1}$"
        ):
            decode_tensors(table, payload, caps)
    # kept packed (the gateway's form) there is no object per element: nothing to charge
    assert decode_tensors(table, payload, TensorCaps(8, 8, cost - 1), packed=True)["b"].size == 6


def test_many_empty_elements_cost_the_host_no_more_than_the_cap() -> None:
    """The attack: a payload of empty elements (8 bytes each) at a quarter of the cap. Refused
    before any object is made: the host's memory stays far below the cap."""
    cap = 8 << 20
    count = cap // 4 // 8
    payload = memoryview(bytes(8 * count))
    tracemalloc.start()
    try:
        with pytest.raises(SandboxError, match=f"of {count} elements would hold"):
            decode_tensors(_table([count], 8 * count), payload, TensorCaps(8, 8, cap))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


_dims = st.lists(st.one_of(st.integers(0, 5), st.sampled_from([2**31, 2**62, 2**64, -1])), max_size=4)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(shape=[], ends=[8, 0], blob=b"", extra=0)  # a region that parses another way than it was built (CI)
@example(shape=[2], ends=[1, 3], blob=b"abc", extra=0)
@given(
    shape=_dims,
    ends=st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 12), max_size=6),
    blob=st.binary(max_size=12),
    extra=st.integers(-3, 3),
)
def test_fuzzed_bytes_regions_only_raise_sandbox_error(
    shape: list[int], ends: list[int], blob: bytes, extra: int
) -> None:
    payload = _region(ends, blob)
    table_spec = _table(shape, max(0, len(payload) + extra))
    try:
        (packed,) = decode_tensors(table_spec, memoryview(payload), TCAPS, packed=True).values()
    except SandboxError:
        packed = None
    try:
        arrays = decode_tensors(table_spec, memoryview(payload), TCAPS)
    except SandboxError:
        assert packed is None  # the packed form (the gateway's) accepts nothing the other refuses
        return
    (array,) = arrays.values()
    items = array.reshape(-1).tolist()
    assert packed is not None and packed.items() == items and list(packed.shape) == shape
    assert list(array.shape) == shape and all(isinstance(i, bytes) for i in items)
    # Accepted only when the payload is exactly one canonical region for this shape: its first
    # 8*count bytes are non-decreasing ends and the rest is the blob they tile, in order. The
    # generator's own split need not be that one (ends=[8, 0] with blob=b"" is also a one-element
    # region whose element is the eight bytes of the second end), so the oracle parses the payload
    # by the shape, independently of the decoder.
    count = len(items)
    table = 8 * count
    claimed = list(struct.unpack(f"<{count}Q", payload[:table]))
    assert claimed == sorted(claimed) and (claimed[-1] if count else 0) == len(payload) - table
    starts = [0, *claimed[:-1]] if count else []
    assert items == [payload[table + a : table + b] for a, b in zip(starts, claimed, strict=True)]


# --- a real hostile job ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warm() -> Iterator[Sandbox]:
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch",)) as sandbox:
        yield sandbox


def _answer(table: str, payload: str) -> str:
    return f"S.sendall(LOADED)\nS.sendall(tensors_frame({table}, {payload}))\ntime.sleep(30)"


@pytest.mark.parametrize(
    ("table", "payload", "message"),
    [
        # overlapping elements
        ("[{'name':'s','dtype':'bytes','shape':[2],'offset':0,'nbytes':19}]",
         "struct.pack('<2Q', 3, 1) + b'abc'", "go backwards"),
        # an end past the blob
        ("[{'name':'s','dtype':'bytes','shape':[1],'offset':0,'nbytes':11}]",
         "struct.pack('<Q', 2**40) + b'abc'", "elements end at 1099511627776"),
        # a count no region could hold, with a tiny payload
        ("[{'name':'s','dtype':'bytes','shape':[2**20],'offset':0,'nbytes':8}]",
         "bytes(8)", "bytes of offsets, its region has 8"),
    ],
)  # fmt: skip
def test_a_hostile_job_answer_with_bad_bytes_is_refused(
    warm: Sandbox, tmp_path: Path, table: str, payload: str, message: str
) -> None:
    model = hostile(tmp_path / "bytes.pt", _answer(table, payload))
    with warm.open(model) as worker, pytest.raises(SandboxError, match=message):
        worker.state_dict()
