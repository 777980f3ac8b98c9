"""Hand-built safetensors files: any header, any data, for cases no honest writer produces."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def st_bytes(header: dict[str, Any] | bytes, data: bytes = b"", *, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def write_st(path: Path, header: dict[str, Any] | bytes, data: bytes = b"", **kw: Any) -> Path:
    path.write_bytes(st_bytes(header, data, **kw))
    return path


def tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
