"""Which runtime a model file needs, told from its first bytes (never from its name).

The file is untrusted and this runs in the trusted process, so zips are listed with airlock's own
bounded reader (:func:`airlock._formats.zip.parse_zip`, over a read-only ``mmap``: names from the
central directory, nothing decompressed), never with ``zipfile``.
"""

from __future__ import annotations

import contextlib
import mmap
import os

from airlock._formats.onnx import looks_like_onnx
from airlock._formats.zip import parse_zip
from airlock.errors import FormatError, LimitError, UsageError
from airlock.limits import DEFAULT_LIMITS

__all__ = ["detect_runtime"]

_HEAD = 4096


def detect_runtime(fd: int) -> str:
    """``torch`` (pickle or torch zip), ``torchscript`` (zip with ``code/``), ``onnx`` (protobuf
    ModelProto, sniffed as the scanner sniffs it), ``text-gguf`` (GGUF magic). Reads through ``fd`` without moving its offset."""
    head = os.pread(fd, 8, 0)
    if head[:1] == b"\x80":
        return "torch"
    if head[:4] == b"GGUF":
        return "text-gguf"
    if head[:4] == b"PK\x03\x04":
        names = _zip_names(fd)
        if any(name.split("/")[1:2] == ["code"] for name in names) or any(
            name.endswith("/constants.pkl") for name in names
        ):
            return "torchscript"
        return "torch"
    if looks_like_onnx(os.pread(fd, _HEAD, 0), os.fstat(fd).st_size):
        return "onnx"  # a ModelProto, whatever field comes first (the scanner's own sniff)
    raise UsageError(f"cannot tell the runtime from the first bytes {head!r}; pass --runtime")


def _zip_names(fd: int) -> list[str]:
    """Member names from the central directory, read by airlock's reader (bounded by the limits)."""
    try:
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError) as exc:
        raise UsageError(f"cannot map the model file to tell its runtime: {exc}") from exc
    try:
        return [member.name for member in parse_zip(memoryview(mapped), DEFAULT_LIMITS).members]
    except (FormatError, LimitError) as exc:
        raise UsageError(f"cannot list the zip archive to tell its runtime ({exc}); pass --runtime") from exc
    finally:
        with contextlib.suppress(BufferError):  # a view still held by a traceback: freed with it
            mapped.close()
