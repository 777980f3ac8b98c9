"""Differential fuzzing of torch zip archives: what torch's reader unpickles vs what airlock analyses.

Archives are built byte by byte (``zipcraft``) in torch's layout with structural mutations where
readers disagree: duplicate and case-variant ``data.pkl`` entries, local/central name mismatches,
flag bits, entry counts, comments, bytes before the archive, a second central directory, zip64
records, stored and deflated members. Every ``data.pkl`` candidate holds a distinct pickle.
torch's own reader (``torch._C.PyTorchFileReader``, miniz) runs only in a throwaway subprocess
and reports the bytes it returns for ``data.pkl``. The invariant: whenever airlock lists the
archive, the bytes torch would unpickle are among the bytes airlock analyses as pickles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import random
import struct
from pathlib import Path
from typing import Any

from airlock._formats.base import Nested, PickleStream, ReadContext
from airlock._formats.zip_reader import ZipReader
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS
from tests._differential import reference_readings, write_corpus
from tests.formats.zipcraft import Entry, build_zip

_RECORDS = [(b"byteorder", b"little"), (b"version", b"3\n"), (b".data/serialization_id", b"1234")]


def _pickle(tag: int) -> bytes:
    return pickle.dumps({"candidate": tag}, protocol=2)


def _rebase(directory: bytes, delta: int) -> bytes:
    out = bytearray(directory)
    pos = 0
    while pos + 46 <= len(out) and out[pos : pos + 4] == b"PK\x01\x02":
        nlen, elen, clen = struct.unpack_from("<HHH", out, pos + 28)
        (offset,) = struct.unpack_from("<I", out, pos + 42)
        struct.pack_into("<I", out, pos + 42, (offset + delta) & 0xFFFFFFFF)
        pos += 46 + nlen + elen + clen
    return bytes(out)


def _directory(raw: bytes) -> tuple[int, bytes]:
    eocd = raw.rindex(b"PK\x05\x06")
    size, offset = struct.unpack_from("<II", raw, eocd + 12)
    return offset, raw[offset : offset + size]


def generate_one(rng: random.Random, tag: int) -> bytes:
    prefix = rng.choice(["archive", "model", "a"])
    entries = [Entry(f"{prefix}/data.pkl".encode(), _pickle(tag), method=rng.choice([0, 8]))]
    for name, data in _RECORDS:
        if rng.random() < 0.8:
            entries.append(Entry(f"{prefix}/".encode() + name, data))
    for extra in range(rng.choice([0, 0, 1, 2])):  # more candidates for data.pkl
        variant = rng.choice(["data.pkl", "DATA.PKL", "Data.pkl", "data.pkl ", "data.pk"])
        entries.insert(rng.randrange(len(entries) + 1),
                       Entry(f"{prefix}/{variant}".encode(), _pickle(tag * 10 + extra + 1), method=rng.choice([0, 8])))  # fmt: skip
    for entry in entries:
        roll = rng.random()
        if roll < 0.05:
            entry.local_name = entry.name.upper()
        elif roll < 0.08:
            entry.flags = rng.choice([0x1, 0x20, 0x40])
        elif roll < 0.1:
            entry.descriptor = True
        elif roll < 0.12:
            entry.zip64 = True
    rng.shuffle(entries)
    if rng.random() < 0.5:  # torch takes the archive name from the first entry
        entries.sort(key=lambda e: not e.name.endswith(b"data.pkl"))
    kwargs: dict[str, Any] = {}
    roll = rng.random()
    if roll < 0.1:
        kwargs["declared_count"] = max(0, len(entries) + rng.choice([-1, 1]))
    elif roll < 0.2:
        kwargs["comment"] = rng.choice([b"c", b"PK\x05\x06", b"x" * 30])
    elif roll < 0.25:
        kwargs["zip64"] = True
    raw = build_zip(entries, **kwargs)
    roll = rng.random()
    if roll < 0.15 and not kwargs and not any(e.zip64 for e in entries):
        # a second directory, read by zipfile; torch keeps the end record's offset
        # the same entries (or more: miniz reads the counted ones), other data.pkl bytes
        other_entries = [
            dataclasses.replace(e, data=_pickle(tag * 10 + 9)) if e.name.lower().endswith(b"data.pkl") else e
            for e in entries
        ]
        if rng.random() < 0.5:  # zipfile's directory longer than torch's (miniz stops at the count)
            other_entries.append(Entry(f"{prefix}/extra/notes.txt".encode(), b"n" * rng.randint(0, 50)))
        other = build_zip(other_entries)
        cd_offset, cd = _directory(raw)
        o_offset, o_cd = _directory(other)
        # [torch's members][zipfile's members][torch's directory][zipfile's directory][end record]
        body = raw[:cd_offset] + other[:o_offset] + cd
        torch_cd = cd_offset + o_offset
        shift = len(body) - torch_cd  # what zipfile adds to every offset in its directory
        count = struct.unpack_from("<H", raw, raw.rindex(b"PK\x05\x06") + 10)[0]
        raw = (
            body
            + _rebase(o_cd, cd_offset - shift)
            + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(o_cd), torch_cd, 0)
        )
    elif roll < 0.2:
        raw = rng.choice([b"PK\x03\x04junk", b"\x00" * 7]) + raw
    elif roll < 0.25:
        raw += b"\x00" * rng.randint(1, 30)
    return raw


def generate(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    return [generate_one(rng, index + 1) for index in range(count)]


_TORCH = r"""
import hashlib, json, sys, torch
out = []
for path in sys.argv[1:]:
    try:
        reader = torch._C.PyTorchFileReader(path)
        out.append(hashlib.sha256(bytes(reader.get_record("data.pkl"))).hexdigest())
    except Exception as exc:
        out.append(None)
print(json.dumps(out))
"""


def torch_readings(paths: list[Path]) -> list[str | None]:
    result: list[str | None] = reference_readings(_TORCH, paths)
    return result


def airlock_pickles(raw: bytes) -> set[str] | None:
    """SHA-256 of every byte string airlock analyses as a pickle (main pickles and nested members)."""
    ctx = ReadContext(limits=DEFAULT_LIMITS, file_path=Path("x.pt"), root=Path())
    found: set[str] = set()
    try:
        for fact in ZipReader().read(memoryview(raw), ctx):
            if isinstance(fact, PickleStream | Nested):
                found.add(hashlib.sha256(bytes(fact.data[fact.offset :])).hexdigest())
    except (FormatError, LimitError):
        return None
    return found


def disagreements(folder: Path, seed: int, count: int) -> tuple[list[str], dict[str, int]]:
    """Archives airlock lists where torch unpickles bytes airlock did not analyse."""
    files = generate(seed, count)
    paths = write_corpus(folder, seed, files, ".pt")
    theirs = torch_readings(paths)
    bad: list[str] = []
    stats = {"covered": 0, "torch_refuses": 0, "airlock_refuses": 0}
    for path, raw, digest in zip(paths, files, theirs, strict=True):
        ours = airlock_pickles(raw)
        if digest is None:
            stats["torch_refuses"] += 1
        elif ours is None:
            stats["airlock_refuses"] += 1
        elif digest in ours:
            stats["covered"] += 1
        else:
            bad.append(f"{path.name}: torch unpickles bytes airlock never analysed ({len(raw)} bytes)")
    return bad, stats
