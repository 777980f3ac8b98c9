"""Which runtime a model file needs, told from its first bytes (never from its name)."""

from __future__ import annotations

import os
import zipfile

from airlock.errors import UsageError

__all__ = ["detect_runtime"]

_MAX_MEMBERS = 100_000


def detect_runtime(fd: int) -> str:
    """``torch`` (pickle or torch zip), ``torchscript`` (zip with ``code/``), ``onnx`` (protobuf
    ModelProto starting with ir_version). Reads through ``fd`` without moving its offset."""
    head = os.pread(fd, 8, 0)
    if head[:1] == b"\x80":
        return "torch"
    if head[:4] == b"PK\x03\x04":
        # names only, from the central directory; no member is decompressed
        with os.fdopen(os.dup(fd), "rb") as handle, zipfile.ZipFile(handle) as archive:
            names = archive.namelist()[:_MAX_MEMBERS]
        os.lseek(fd, 0, os.SEEK_SET)  # the dup shared the offset; the job must read from byte 0
        if any(name.split("/")[1:2] == ["code"] for name in names) or any(
            name.endswith("/constants.pkl") for name in names
        ):
            return "torchscript"
        return "torch"
    if head[:1] == b"\x08":  # field 1 (ir_version), varint: how every ONNX ModelProto starts
        return "onnx"
    raise UsageError(f"cannot tell the runtime from the first bytes {head!r}; pass --runtime")
