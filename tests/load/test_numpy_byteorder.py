"""A pickled ``numpy.dtype`` takes its byte order from the type string (``dtype(">f8")`` is
big-endian) unless a BUILD state replaces it. airlock must read the bytes as numpy's own unpickler
does, for every combination of prefix and state; the oracle is ``pickle.loads`` in a throwaway
subprocess (the fixtures are plain arrays, nothing else)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import airlock
from airlock.errors import AirlockError
from airlock.loading import convert

np = pytest.importorskip("numpy")

_RAW = struct.pack("<2d", 1.5, -2.25)  # the same 16 bytes under every dtype


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _array_pickle(descr: str, order: str | None) -> bytes:
    """``{"a": ndarray}`` as numpy pickles it, with ``numpy.dtype(descr, False, True)`` and
    optionally the dtype state ``(3, order, None, None, None, -1, -1, 0)``."""
    dtype = b"cnumpy\ndtype\n(" + _unicode(descr) + b"\x89\x88tR"
    if order is not None:
        dtype += b"(K\x03" + _unicode(order) + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    shape = struct.pack("<B", 16 // int(descr.lstrip("<>=|")[1:]))
    body = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
        b"(K\x01K" + shape + b"\x85" + dtype + b"\x89C\x10" + _RAW + b"tb"
    )
    return b"\x80\x02}" + _unicode("a") + body + b"s."


_ORACLE = r"""
import json, pickle, sys
out = {}
for path in json.load(sys.stdin):
    try:
        a = pickle.loads(open(path, "rb").read())["a"]
        out[path] = [a.dtype.str, a.tolist()]
    except Exception as exc:
        out[path] = ["error", type(exc).__name__]
json.dump(out, sys.stdout)
"""

CASES = [
    (prefix + code, order)
    for code in ("f8", "i4", "f2")
    for prefix in ("", "<", ">", "=", "|")
    for order in (None, "<", ">", "=", "|")
]


def test_pickled_dtype_byte_order_matches_numpy(tmp_path: Path) -> None:
    paths = []
    for index, (descr, order) in enumerate(CASES):
        path = tmp_path / f"{index}.pkl"
        path.write_bytes(_array_pickle(descr, order))
        paths.append(path)
    proc = subprocess.run(
        [sys.executable, "-c", _ORACLE],
        input=json.dumps([str(p) for p in paths]),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    numpy_says = json.loads(proc.stdout)
    swapped = 0
    for path, (descr, order) in zip(paths, CASES, strict=True):
        dtype_str, values = numpy_says[str(path)]
        assert dtype_str != "error", (descr, order, values)
        code = descr.lstrip("<>=|")
        swapped += values != np.frombuffer(_RAW, "<" + code).tolist()
        got = airlock.load(path)["a"]
        assert got.tolist() == values, (descr, order, dtype_str)
    # the oracle really reads some big-endian: prefix '>' without a state, or a '>' state (6 of
    # the 25 combinations per type)
    assert swapped == 3 * 6


def test_big_endian_dtype_without_state_converts_to_its_values(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    src = tmp_path / "a.pkl"
    src.write_bytes(_array_pickle(">f8", None))
    convert(src, tmp_path / "a.safetensors")
    assert load_file(str(tmp_path / "a.safetensors"))["a"].tolist() == np.frombuffer(_RAW, ">f8").tolist()


def test_unknown_byte_order_in_the_state_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "a.pkl"
    src.write_bytes(_array_pickle("<f8", "!"))
    with pytest.raises(AirlockError, match="numpy byte order '!'"):
        airlock.load(src)
