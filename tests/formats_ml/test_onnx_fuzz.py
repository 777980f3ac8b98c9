"""Property tests: mangled ONNX never crashes the reader or the scan, and a cut model is never clean."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

import airlock
from airlock import Verdict
from airlock._formats.onnx import OnnxReader
from airlock.errors import FormatError
from tests.formats_ml.helpers import read_all
from tests.formats_ml.onnxgen import nested_if, simple_model, tensor

READER = OnnxReader()
_FN = helper.make_function(
    "local", "F", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], [helper.make_opsetid("", 17)]
)
_CUSTOM = helper.make_node("F", ["y"], ["z"], name="call", domain="local")

#: models whose last top-level field is opset_import: every strict prefix is broken
CUT_SEEDS = [simple_model().SerializeToString(), nested_if(4, tensor("c")).SerializeToString()]
SEEDS = [*CUT_SEEDS, simple_model([_CUSTOM], functions=[_FN], domains=("local",)).SerializeToString()]
_PATH = Path("/nonexistent/m.onnx")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), min_size=1, max_size=6),
)
def test_bit_flips_only_raise_format_errors(seed: bytes, flips: list[tuple[int, int]]) -> None:
    raw = bytearray(seed)
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    with contextlib.suppress(FormatError):
        read_all(READER, bytes(raw), _PATH, on_disk=False)


@settings(max_examples=200, deadline=None)
@given(seed=st.sampled_from(CUT_SEEDS), data=st.data())
def test_every_truncation_is_an_error(seed: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(1, len(seed) - 1))
    try:
        read_all(READER, seed[:cut], _PATH, on_disk=False)
    except FormatError:
        return
    raise AssertionError(f"prefix of {cut} bytes read without error")


@settings(max_examples=25, deadline=None)
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_scan_of_a_mangled_model_never_crashes_and_cut_is_never_clean(
    seed: bytes, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(1, len(seed) - 1))
    raw = bytearray(seed[:cut])
    flip = data.draw(st.one_of(st.none(), st.tuples(st.integers(0, cut - 1), st.integers(1, 255))))
    if flip is not None:
        raw[flip[0]] ^= flip[1]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.onnx"
        path.write_bytes(bytes(raw))
        report = airlock.scan(path)
    if seed in CUT_SEEDS and flip is None:
        assert report.verdict is not Verdict.CLEAN


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_random_bytes(raw: bytes) -> None:
    if not READER.sniff(raw[:4096], len(raw)):
        return
    with contextlib.suppress(FormatError):
        read_all(READER, raw, _PATH, on_disk=False)
