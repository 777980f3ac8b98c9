"""Property tests: mangled Keras configs, archives and HDF5 files only ever raise FormatError."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airlock
from airlock import Verdict
from airlock._formats.base import ReadContext
from airlock._formats.keras import KerasConfigReader, KerasH5Reader, KerasZipReader, analyse_config
from airlock.errors import FormatError
from airlock.limits import DEFAULT_LIMITS
from tests.formats_ml.helpers import read_all
from tests.formats_ml.kerasgen import (
    functional,
    lambda_layer_v3,
    legacy_sequential,
    write_h5,
    write_keras,
)

_PATH = Path("/nonexistent/m.keras")
_CTX = ReadContext(limits=DEFAULT_LIMITS, file_path=_PATH, root=_PATH.parent)


def _seeds() -> tuple[list[bytes], list[bytes]]:
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        archives = [
            write_keras(base / "a.keras", functional()).read_bytes(),
            write_keras(base / "b.keras", functional(lambda_layer_v3(base / "x"))).read_bytes(),
        ]
        h5 = [write_h5(base / "c.h5", legacy_sequential()).read_bytes()]
    return archives, h5


ARCHIVES, H5 = _seeds()
_NAMES = st.sampled_from(["class_name", "config", "module", "registered_name", "function", "name", "layers"])
_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
    st.sampled_from(["function", "Lambda", "__lambda__", "builtins", "os", "keras.layers", "exec", "__typespec__"]),
)  # fmt: skip
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_NAMES, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_any_json_value_is_analysed_without_crashing(value: Any) -> None:
    with contextlib.suppress(FormatError):
        list(analyse_config(value, _CTX, "config"))
    raw = json.dumps({"class_name": "Functional", "config": value}).encode()
    with contextlib.suppress(FormatError):
        read_all(KerasConfigReader(), raw, _PATH)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(ARCHIVES),
    flips=st.lists(st.tuples(st.integers(0, 100_000), st.integers(1, 255)), min_size=1, max_size=6),
)
def test_bit_flipped_archives_only_raise_format_errors(seed: bytes, flips: list[tuple[int, int]]) -> None:
    raw = bytearray(seed)
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    with contextlib.suppress(FormatError):
        read_all(KerasZipReader(), bytes(raw), _PATH)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(H5),
    cut=st.integers(1, 1 << 20),
    flips=st.lists(st.tuples(st.integers(0, 100_000), st.integers(1, 255)), max_size=4),
)
def test_mangled_h5_only_raises_format_errors(seed: bytes, cut: int, flips: list[tuple[int, int]]) -> None:
    raw = bytearray(seed[: max(8, cut % len(seed) if cut < len(seed) else len(seed))])
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    with contextlib.suppress(FormatError):
        read_all(KerasH5Reader(), bytes(raw), _PATH)


@settings(max_examples=20, deadline=None)
@given(seed=st.sampled_from(ARCHIVES), data=st.data())
def test_truncated_archive_is_never_clean(seed: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(1, len(seed) - 1))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.keras"
        path.write_bytes(seed[:cut])
        assert airlock.scan(path).verdict is not Verdict.CLEAN
