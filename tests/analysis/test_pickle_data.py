"""The plain-data fast pass agrees with the symbolic machine wherever it answers.

``scan_data_pickle`` judges pickles that hold only literals and containers without building the
object graph. On every input where it gives an answer (not None), the machine must agree on
where the pickle ends, whether and where it breaks off, and the FRAME facts; and the machine must
see nothing to import or call there.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import airlock
from airlock._analysis.pickle_data import scan_data_pickle
from airlock._analysis.pickle_vm import Machine
from airlock.limits import Limits

_CONTAINER_KINDS = frozenset({"append", "extend", "setitem", "add"})
_SMALL = Limits(max_pickle_opcodes=100_000, max_memo_entries=10_000, max_stack_items=10_000)
_DATA = {"a": [1, 2.5, "x", b"y", None, True, -7, 2**70], "b": (1, 2), "c": {3, 4}, "d": frozenset({5})}
_SEEDS = [pickle.dumps(_DATA, protocol=p) for p in range(6)] + [
    pickle.dumps([{"id": i, "w": f"w{i}"} for i in range(300)], protocol=p) for p in (0, 2, 4)
]


def _agree(data: bytes) -> None:
    view = memoryview(data)
    fast = scan_data_pickle(view, 0, _SMALL, lambda: None)
    if fast is None:
        return
    full = Machine(view, _SMALL).run(0)
    shown = data[:80]
    # APPEND/SETITEM/ADDITEMS on a literal: the machine records a call on it (a finding only when
    # the target is an imported object, which a data pickle has none of).
    assert not full.globals and all(c.kind in _CONTAINER_KINDS for c in full.calls), shown
    assert (fast.error is None) == (full.error is None), (shown, fast.error, full.error)
    if fast.error is not None and full.error is not None:
        assert type(fast.error) is type(full.error), (shown, fast.error, full.error)
        assert fast.error.offset == full.error.offset, (shown, fast.error, full.error)
    else:
        assert fast.end == full.end
    assert fast.frame_crossing == full.frame_crossing
    assert fast.anomalies == [a for a in full.anomalies if not a[0].endswith("-on-object")]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    _agree(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_SEEDS), st.data())
def test_cut_and_flipped_data_pickles(seed: bytes, data: st.DataObject) -> None:
    _agree(seed[: data.draw(st.integers(0, len(seed)))])
    flipped = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 3))):
        flipped[data.draw(st.integers(0, len(seed) - 1))] = data.draw(st.integers(0, 255))
    _agree(bytes(flipped))


def test_ordinary_data_pickles_take_the_fast_pass() -> None:
    # protocols < 4 pickle sets and bytes through globals (builtins.set, _codecs.encode)
    for seed in _SEEDS[4:]:
        result = scan_data_pickle(memoryview(seed), 0, _SMALL, lambda: None)
        assert result is not None and result.error is None and result.end == len(seed)


def test_limits_hold_on_the_fast_pass(tmp_path: Path) -> None:
    # checked every 65536 opcodes, like the machine
    data = b"\x80\x04(" + b"K\x01" * 70_000 + b"l."
    result = scan_data_pickle(memoryview(data), 0, Limits(max_stack_items=10_000), lambda: None)
    assert result is not None and isinstance(result.error, airlock.LimitError)
    assert "max_stack_items" in str(result.error)
    sparse = b"\x80\x04]r\xff\xff\xff\xffr\x00\x00\x00\x00j\xff\xff\xff\xff0h\x00."  # keys 2**32-1 and 0
    result = scan_data_pickle(memoryview(sparse), 0, _SMALL, lambda: None)
    assert result is not None and result.error is None
    many = b"\x80\x04N" + b"\x94" * 70_000 + b"."
    result = scan_data_pickle(memoryview(many), 0, _SMALL, lambda: None)
    assert result is not None and isinstance(result.error, airlock.LimitError)
    assert "max_memo_entries" in str(result.error)
