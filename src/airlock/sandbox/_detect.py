"""Which runtime a model file needs, told from its content (never from its name).

The content is sniffed exactly as the scanner sniffs it (``registry.sniff_format``), and the
format's record names the runtime whose loader reads it. The file is untrusted and this runs in
the trusted process, so a zip is listed with airlock's own bounded reader
(:func:`airlock._formats.zip.parse_zip`, over a read-only ``mmap``: names from the central
directory, nothing decompressed), never with ``zipfile``, to tell TorchScript from torch.save.
"""

from __future__ import annotations

import contextlib
import mmap
import os

from airlock._formats.registry import RUNTIME_TORCH, sniff_format
from airlock._formats.zip import LOCAL_SIG, parse_zip
from airlock.errors import FormatError, LimitError, UsageError
from airlock.limits import DEFAULT_LIMITS

__all__ = ["detect_runtime"]

_HEAD = 4096


def detect_runtime(fd: int) -> str:
    """The runtime of the file's format (its record in ``_formats/registry.py``): ``torch``
    (pickle, torch legacy, torch zip), ``torchscript`` (a zip with ``code/``), ``onnx``, ``text-gguf`` (GGUF).
    Reads through ``fd`` without moving its offset."""
    head = os.pread(fd, _HEAD, 0)
    fmt = sniff_format(head, os.fstat(fd).st_size)
    if fmt is None or fmt.runtime is None:
        what = f"{fmt.name} content" if fmt is not None else f"the first bytes {head[:8]!r}"
        raise UsageError(f"cannot tell the runtime from {what}: no sandbox runtime loads it; pass --runtime")
    if fmt.runtime == RUNTIME_TORCH and head.startswith(LOCAL_SIG):
        names = _zip_names(fd)
        if any(name.split("/")[1:2] == ["code"] for name in names) or any(
            name.endswith("/constants.pkl") for name in names
        ):
            return "torchscript"
    return fmt.runtime


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
