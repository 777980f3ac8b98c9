"""Differential fuzzing of safetensors headers: airlock's verdict against ``safetensors.safe_open``.

Headers are written as JSON *text*, so number spellings JSON parsers read differently can be
generated: ``-0`` (Python: 0, serde_json: the float -0.0), ``1.0``/``1e0``, integers past 2**64,
as well as duplicate and extra keys, metadata of the wrong types, gaps, overlaps, short or long
data, whitespace and padding around the object. The reference loader (Rust) runs only in a
throwaway subprocess. The invariant: a file airlock calls CLEAN opens, and every tensor reads,
with the reference loader.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

import airlock
from airlock.results import Verdict
from tests._differential import reference_readings, write_corpus

_DTYPES = [
    ("F32", 4),
    ("U8", 1),
    ("BF16", 2),
    ("I64", 8),
    ("BOOL", 1),
    ("F8_E4M3", 1),
    ("f32", 4),
    ("F64", 8),
]
_NAMES = ["a", "b", "w.weight", "\\u00e9", "x y", "a"]


def _int(rng: random.Random, value: int) -> str:
    roll = rng.random()
    if roll < 0.04 and value == 0:
        return "-0"
    if roll < 0.06:
        return f"{value}.0"
    if roll < 0.08:
        return f"{value}e0"
    if roll < 0.09:
        return str(value + 2**64)
    if roll < 0.10:
        return f"0{value}"
    return str(value)


def _tensor(rng: random.Random, dtype: str, shape: list[int], begin: int, end: int) -> str:
    fields = {
        "dtype": json.dumps(dtype),
        "shape": "[" + ", ".join(_int(rng, d) for d in shape) + "]",
        "data_offsets": f"[{_int(rng, begin)}, {_int(rng, end)}]",
    }
    roll = rng.random()
    if roll < 0.04:
        fields["extra"] = "1"
    elif roll < 0.07:
        del fields[rng.choice(list(fields))]
    keys = list(fields)
    rng.shuffle(keys)
    return "{" + ", ".join(f'"{k}": {fields[k]}' for k in keys) + "}"


def generate_one(rng: random.Random) -> bytes:
    entries: list[str] = []
    offset = 0
    for _ in range(rng.randint(0, 4)):
        dtype, size = rng.choice(_DTYPES)
        shape = [rng.randint(0, 3) for _ in range(rng.randint(0, 3))]
        count = 1
        for dim in shape:
            count *= dim
        begin = offset
        roll = rng.random()
        if roll < 0.05:
            begin += 1  # gap
        elif roll < 0.1 and offset:
            begin -= 1  # overlap
        end = begin + count * size + (1 if rng.random() < 0.05 else 0)
        entries.append(f'"{rng.choice(_NAMES)}": {_tensor(rng, dtype, shape, begin, end)}')
        offset = max(offset, end)
    roll = rng.random()
    if roll < 0.2:
        meta = rng.choice(['{"format": "pt"}', "null", '{"k": 1}', "[]", '"x"', "{}", '{"k": "-0"}'])
        entries.insert(rng.randrange(len(entries) + 1), f'"__metadata__": {meta}')
    text = "{" + ", ".join(entries) + "}"
    roll = rng.random()
    if roll < 0.05:
        text = " " + text
    elif roll < 0.1:
        text += " " * rng.randint(1, 8)
    elif roll < 0.12:
        text += "\0"
    elif roll < 0.14:
        text += "\n"
    raw = text.encode()
    data_size = offset + rng.choice([0, 0, 0, 0, 1, -1])
    return struct.pack("<Q", len(raw)) + raw + b"\0" * max(0, data_size)


def generate(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    return [generate_one(rng) for _ in range(count)]


_LOADER = r"""
import json, sys
from safetensors import safe_open
out = []
for path in sys.argv[1:]:
    try:
        with safe_open(path, "pt") as f:
            for key in f.keys():
                f.get_tensor(key)
            f.metadata()
        out.append("ok")
    except Exception as exc:
        out.append(type(exc).__name__)
print(json.dumps(out))
"""


def loader_results(paths: list[Path]) -> list[str]:
    result: list[str] = reference_readings(_LOADER, paths)
    return result


def disagreements(folder: Path, seed: int, count: int) -> tuple[list[str], dict[str, Any]]:
    """Files airlock calls CLEAN that the reference loader refuses."""
    files = generate(seed, count)
    paths = write_corpus(folder, seed, files, ".safetensors")
    theirs = loader_results(paths)
    bad: list[str] = []
    stats = {"agree": 0, "both_refuse": 0, "airlock_refuses": 0}
    for path, raw, loader in zip(paths, files, theirs, strict=True):
        clean = airlock.scan(path).verdict is Verdict.CLEAN
        if clean and loader != "ok":
            bad.append(f"{path.name}: airlock CLEAN, safe_open {loader}: {raw[:300]!r}")
        elif clean:
            stats["agree"] += 1
        else:
            stats["both_refuse" if loader != "ok" else "airlock_refuses"] += 1
    return bad, stats
