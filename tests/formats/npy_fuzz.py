"""Differential fuzzing of ``.npy`` headers: airlock's reader against numpy's, on generated files.

The generator writes header text from a grammar of the forms Python's ``ast.literal_eval`` (and
so numpy) reads, and of near misses: key order, extra and missing keys, quotes, escapes (octal,
hex, NUL), string prefixes and implicit concatenation, integer spellings (signs, leading zeros,
hex, underscores, ``L``), booleans as shape entries, whitespace and comments, trailing commas,
byte-order marks, structured and sub-array dtypes, and versions 1.0 / 2.0 / 3.0. numpy runs only
in a subprocess (``numpy.load(allow_pickle=False)`` plus its own header reader for
``fortran_order``); the invariant is "read it as numpy does, or refuse".
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

from airlock._formats.npy import _header_fields, dtype_info
from airlock._formats.pyliteral import parse_literal
from airlock.errors import FormatError, LimitError
from tests._differential import reference_readings, write_corpus

_DATA = bytes(4096)

_DESCRS = [
    "'<f8'", "'>f8'", "'|u1'", "'<i2'", "'>i4'", "'=f4'", "'<U3'", "'|S5'", "'|V8'", "'<M8[ns]'",
    "'|b1'", "'<c16'", "'|O'", "'>O'", "'<f2'", "'f4'", "'i3'", "'float32'", "'object'", "'O8'",
    "\"<f8\"", "u'<f8'", "b'<f8'", "'<f' '8'", "'<\\x66\\x38'", "'<\\146\\070'", "'<f8\\0'",
    "[('a', '<i4'), ('b', '<f8')]", "[('a', '<i4'), ('b', [('c', '|O')])]", "[('', '|V4'), ('x', '<f4')]",
    "[(('title', 'n'), '<f4')]", "[('a', '<i4', (2,))]", "[('a', '<i4', 2)]", "('<f4', (2, 3))",
    "('<f4', 2)", "('|O', (2,))", "[('a', '<i4'), ('a', '<f8')]", "[]", "[('a', '<i4',)]",
    "[('', '<i4')]", "[('', '|V4'), ('', '|V2'), ('a', '<f4')]", "[(('a', 'a'), '<f4')]",
    "[(('t', 'a'), '<f4'), ('t', '<i2')]", "[('a', '|O', (2,))]", "[('a', ('<f4', (2,)))]", "[(1, '<f4')]",
]  # fmt: skip
_INTS = [
    "3", "0", "1", "2", "-0", "+2", "007", "00", "0x2", "1_0", "2L", "3 L", "1L5", "2l", "0L", "True", "False",
    "2.0", "-1", "(2)",
]  # fmt: skip
_BOOLS = ["False", "True", "0", "1", "None", "'False'"]
_SPACES = ["", " ", "  ", "\t", "\n", "\r", "\f", "\\\n"]


def _space(rng: random.Random) -> str:
    return rng.choice(_SPACES) if rng.random() < 0.2 else rng.choice(["", " "])


def _shape(rng: random.Random) -> str:
    n = rng.choice([0, 1, 1, 2, 3])
    items = [rng.choice(_INTS) if rng.random() < 0.15 else str(rng.randint(0, 3)) for _ in range(n)]
    sep = rng.choice([", ", ",", " , "])
    body = sep.join(items)
    if (n == 1 and rng.random() < 0.8) or (n > 1 and rng.random() < 0.3):
        body += ","
    return (
        rng.choice(["(", "( "]) + body + rng.choice([")", " )"]) if rng.random() > 0.05 else "[" + body + "]"
    )


def header_text(rng: random.Random) -> str:
    fields = {
        "descr": rng.choice(_DESCRS),
        "fortran_order": rng.choice(_BOOLS) if rng.random() < 0.15 else rng.choice(["False", "True"]),
        "shape": _shape(rng),
    }
    keys = list(fields)
    rng.shuffle(keys)
    quote = rng.choice(["'", "'", '"'])
    parts = [f"{quote}{k}{quote}:{_space(rng)}{fields[k]}" for k in keys]
    roll = rng.random()
    if roll < 0.05:
        parts.append(f"'extra': {rng.choice(_INTS)}")
    elif roll < 0.08:
        parts.pop(rng.randrange(len(parts)))
    elif roll < 0.10:
        parts.append(f"'descr': {rng.choice(_DESCRS)}")
    text = "{" + _space(rng) + ("," + _space(rng)).join(parts)
    text += rng.choice(["", ",", ", ", ",,"]) + _space(rng) + "}"
    if rng.random() < 0.05:
        text += rng.choice([" # comment", "\n# c", " ;", " x"])
    return text


def build(text: str, version: int) -> bytes:
    encoded = text.encode("utf-8" if version == 3 else "latin-1", "replace")
    prefix = 10 if version == 1 else 12
    pad = (-(prefix + len(encoded) + 1)) % 64
    encoded += b" " * pad + b"\n"
    length = struct.pack("<H" if version == 1 else "<I", len(encoded))
    return b"\x93NUMPY" + bytes([version, 0]) + length + encoded + _DATA


def generate(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    return [build(header_text(rng), rng.choice([1, 1, 2, 3])) for _ in range(count)]


def airlock_reading(raw: bytes) -> dict[str, Any] | None:
    """What airlock reads from the header, or None when it refuses."""
    version = raw[6]
    start = 10 if version == 1 else 12
    (hlen,) = struct.unpack_from("<H" if version == 1 else "<I", raw, 8)
    text = raw[start : start + hlen].decode("utf-8" if version == 3 else "latin-1")
    try:
        header = parse_literal(text, 1 << 20, py2_longs=version < 3)
        descr, fortran, shape = _header_fields(header)
        itemsize, has_object = dtype_info(descr)
        if isinstance(descr, tuple) and not has_object:
            return None  # the reader refuses it (see NpyReader.read)
    except (FormatError, LimitError):
        return None
    return {"shape": list(shape), "fortran": fortran, "itemsize": itemsize, "object": has_object}


_NUMPY = r"""
import json, sys, warnings
import numpy as np
try:
    from numpy.lib import _format_impl as fmt
except ImportError:
    from numpy.lib import format as fmt
warnings.simplefilter("ignore")
out = []
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            shape, fortran, dtype = fmt._read_array_header(f, version)
        reading = {"shape": list(shape), "fortran": bool(fortran), "itemsize": dtype.itemsize,
                   "object": bool(dtype.hasobject)}
        try:
            np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" not in str(exc):
                raise
            assert dtype.hasobject
    except Exception as exc:
        reading = {"error": type(exc).__name__}
    out.append(reading)
print(json.dumps(out))
"""


def numpy_readings(paths: list[Path]) -> list[dict[str, Any]]:
    """numpy's reading of each file, from one throwaway subprocess."""
    result: list[dict[str, Any]] = reference_readings(_NUMPY, paths)
    return result


def disagreements(folder: Path, seed: int, count: int) -> tuple[list[str], dict[str, int]]:
    """Cases where airlock accepts a header and numpy reads it otherwise (or refuses it)."""
    files = generate(seed, count)
    paths = write_corpus(folder, seed, files, ".npy")
    theirs = numpy_readings(paths)
    bad: list[str] = []
    stats = {"agree": 0, "both_refuse": 0, "airlock_refuses": 0}
    for path, raw, numpy_view in zip(paths, files, theirs, strict=True):
        ours = airlock_reading(raw)
        if ours is None:
            stats["both_refuse" if "error" in numpy_view else "airlock_refuses"] += 1
        elif ours == numpy_view:
            stats["agree"] += 1
        else:
            bad.append(f"{path.name}: airlock {ours}, numpy {numpy_view}, header {raw[:200]!r}")
    return bad, stats
