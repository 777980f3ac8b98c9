"""A small GGUF writer for tests: any counts, lengths, types and offsets, including lies."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_FMT = {UINT8: "B", INT8: "b", UINT16: "H", INT16: "h", UINT32: "I", INT32: "i", FLOAT32: "f", BOOL: "?",
        UINT64: "Q", INT64: "q", FLOAT64: "d"}  # fmt: skip


def gstr(text: str | bytes, length: int | None = None) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def value(vtype: int, val: Any) -> bytes:
    if vtype == STRING:
        return gstr(val)
    if vtype == ARRAY:
        etype, items = val
        return struct.pack("<IQ", etype, len(items)) + b"".join(value(etype, i) for i in items)
    return struct.pack("<" + _FMT.get(vtype, "B"), val)  # unknown types: one byte


@dataclass
class Tensor:
    name: str
    dims: list[int]
    ggml_type: int = 0  # F32
    offset: int | None = None  # None: placed after the previous one, aligned
    nbytes: int | None = None  # None: computed for F32 (4 bytes per element)


@dataclass
class GGUF:
    kv: list[tuple[str, int, Any]] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    version: int = 3
    n_tensors: int | None = None
    n_kv: int | None = None
    alignment: int = 32
    trailing: bytes = b""

    def build(self) -> bytes:
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version, len(self.tensors) if self.n_tensors is None else self.n_tensors,
                           len(self.kv) if self.n_kv is None else self.n_kv)  # fmt: skip
        for key, vtype, val in self.kv:
            out += gstr(key) + struct.pack("<I", vtype) + value(vtype, val)
        placed: list[tuple[int, int]] = []
        cursor = 0
        for t in self.tensors:
            size = t.nbytes if t.nbytes is not None else 4 * _prod(t.dims)
            offset = cursor if t.offset is None else t.offset
            placed.append((offset, size))
            cursor = _align(offset + size, self.alignment)
            out += (
                gstr(t.name) + struct.pack("<I", len(t.dims)) + b"".join(struct.pack("<Q", d) for d in t.dims)
            )
            out += struct.pack("<IQ", t.ggml_type, offset)
        if self.tensors:
            out += b"\0" * (_align(len(out), self.alignment) - len(out))
            end = max((o + s for o, s in placed), default=0)
            out += b"\x11" * _align(end, self.alignment)
        return bytes(out) + self.trailing


def _prod(dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _align(n: int, a: int) -> int:
    return -(-n // a) * a
