"""Which runtime a model file needs, told from its first bytes (never from its name)."""

from __future__ import annotations

import mmap
import os

from airlock.errors import FormatError, UsageError

__all__ = ["detect_runtime"]

_MAX_MEMBERS = 100_000


def detect_runtime(fd: int) -> str:
    """``torch`` (pickle or torch zip), ``torchscript`` (zip with ``code/``), ``onnx`` (protobuf
    ModelProto starting with ir_version). Reads through ``fd`` without moving its offset."""
    head = os.pread(fd, 8, 0)
    if head[:1] == b"\x80":
        return "torch"
    if head[:4] == b"PK\x03\x04":
        # names only, from the central directory, with airlock's own bounded zip reader (never the
        # stdlib zipfile on untrusted bytes in the trusted process); no member is decompressed
        from airlock._formats.zip import parse_zip
        from airlock.limits import DEFAULT_LIMITS

        size = os.fstat(fd).st_size
        try:
            with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped, memoryview(mapped) as view:
                listing = parse_zip(view, DEFAULT_LIMITS)
                names = [member.name for member in listing.members[:_MAX_MEMBERS]]
                del listing
        except (FormatError, ValueError, OSError, BufferError) as exc:
            raise UsageError(
                f"cannot tell the runtime: the zip archive does not list ({exc}); pass --runtime"
            ) from exc
        if any(name.split("/")[1:2] == ["code"] for name in names) or any(
            name.endswith("/constants.pkl") for name in names
        ):
            return "torchscript"
        return "torch"
    if head[:1] == b"\x08":  # field 1 (ir_version), varint: how every ONNX ModelProto starts
        return "onnx"
    raise UsageError(f"cannot tell the runtime from the first bytes {head!r}; pass --runtime")
