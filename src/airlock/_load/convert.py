"""Write a planned checkpoint as safetensors: one pass over the source, atomic output.

The source is walked once, in file order: every byte is hashed (the sha256 recorded in the
output's metadata) and, while its pages are resident, the tensors over it are written out. A
storage that is exactly one contiguous tensor is streamed chunk by chunk; others (views, tied
weights, big-endian data) are materialised one storage at a time. Pages already handled are
dropped from the process (``MADV_DONTNEED``), so peak memory stays near the largest storage,
not the model.

safetensors forbids tensors that share bytes: every name gets its own contiguous copy (tied
weights are written once per name). The output is written to a temporary file in the target
folder, synced, and linked into place only when complete; an existing file is never replaced
unless ``force``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from airlock import __version__
from airlock._load.arrays import Prepared, raw_array
from airlock._load.model import TensorRef
from airlock._load.sources import Mapped, open_checked, plan_tensors
from airlock.errors import FormatError, LimitError, UsageError
from airlock.limits import Limits
from airlock.policy import Policy

__all__ = ["Converted", "convert_file", "safetensors_name"]

_CHUNK: Final = 16 * 1024 * 1024
_PAGE: Final = mmap.PAGESIZE
_SHA_KEY: Final = "airlock.source_sha256"
_PLACEHOLDER: Final = "0" * 64


@dataclass(frozen=True)
class Converted:
    """One safetensors file written."""

    source: Path
    output: Path
    #: tensor name -> bytes written, in file order
    tensors: dict[str, int]
    source_sha256: str

    @property
    def nbytes(self) -> int:
        return sum(self.tensors.values())


def safetensors_name(name: str) -> str:
    """``pytorch_model-00001-of-00002.bin`` -> ``model-00001-of-00002.safetensors``."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    if stem.startswith("pytorch_model"):
        stem = "model" + stem[len("pytorch_model") :]
    return stem + ".safetensors"


def convert_file(
    src: Path, dst: Path, *, force: bool, allow: frozenset[str], limits: Limits, policy: Policy | None = None
) -> Converted:
    """Convert one file. Refuses anything the loader refuses; never leaves a partial ``dst``."""
    if dst.exists() and not force:
        raise UsageError(f"{dst} exists; pass --force to replace it")
    if not dst.parent.is_dir():
        raise UsageError(f"output folder {dst.parent} does not exist")
    with open_checked(src, limits, policy or Policy(allow=allow), writable=False) as mapped:
        plan = plan_tensors(mapped, limits, allow)
        for name, ref in plan.items():
            if ref.quantized is not None:
                raise FormatError(
                    f"tensor {name!r} is quantized ({ref.quantized}); safetensors has no quantized dtype, "
                    "so airlock convert refuses it (airlock.load gives its integer representation and parameters)"
                )
            if ref.dtype.safetensors is None:
                raise FormatError(
                    f"tensor {name!r}: safetensors has no {ref.dtype.name} dtype; cannot convert"
                )
        check_expansion(plan, limits)
        return _write(mapped, plan, src, dst, force)


def check_expansion(plan: dict[str, TensorRef], limits: Limits) -> None:
    """Refuse a plan whose views repeat bytes (stride 0, overlapping strides) into more output
    than ``limits.max_decompressed_bytes``, before anything is written.

    safetensors must hold every element, so a stride-0 view of 16 bytes as ``(2**14, 2**14)``
    float32 writes 1 GiB. The bytes written beyond each view's own span are counted for the
    whole file, like decompressed bytes.
    """
    total = 0
    for name, ref in plan.items():
        span = ref.byte_span()
        if span is None:
            continue
        extra = ref.nbytes - (span[1] - span[0])
        if extra <= 0:
            continue
        total += extra
        if total > limits.max_decompressed_bytes:
            raise LimitError(
                f"tensor {name!r}: size {ref.shape} with stride {ref.stride} repeats its "
                f"{span[1] - span[0]} bytes into {ref.nbytes}; the file's repeated bytes pass "
                f"{limits.max_decompressed_bytes} (limit max_decompressed_bytes)"
            )


def _write_strided(out: IO[bytes], arr: Any, check_time: Callable[[], None]) -> None:
    """Write ``arr`` in C order, copying at most about one chunk at a time (never the whole
    logical size of a strided or stride-0 view)."""
    import numpy as np

    if arr.size == 0:
        return
    if arr.ndim == 0 or arr.nbytes <= _CHUNK or arr.flags.c_contiguous:
        if arr.flags.c_contiguous:
            out.write(arr.reshape(-1).view(np.uint8).data)
        else:
            out.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
        return
    row = arr[0].nbytes
    step = max(1, _CHUNK // max(row, 1))
    for start in range(0, arr.shape[0], step):
        check_time()
        if step == 1 and row > _CHUNK:
            _write_strided(out, arr[start], check_time)
        else:
            _write_strided(out, arr[start : start + step], check_time)


def _layout(plan: dict[str, TensorRef]) -> list[tuple[str, TensorRef]]:
    """Tensors in the order their bytes appear in the source (inline data first)."""
    return sorted(
        plan.items(), key=lambda item: (item[1].storage.region, item[1].storage.offset + item[1].offset)
    )


def _header(order: list[tuple[str, TensorRef]], src: Path) -> tuple[bytes, int]:
    header: dict[str, object] = {
        "__metadata__": {
            "format": "pt",
            "airlock.source": src.name,
            _SHA_KEY: _PLACEHOLDER,
            "airlock.version": __version__,
        }
    }
    at = 0
    for name, ref in order:
        header[name] = {
            "dtype": ref.dtype.safetensors,
            "shape": list(ref.shape),
            "data_offsets": [at, at + ref.nbytes],
        }
        at += ref.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    marker = f'"{_SHA_KEY}":"{_PLACEHOLDER}"'.encode()
    return text, text.index(marker) + len(marker) - 65


def _groups(
    order: list[tuple[str, TensorRef]],
) -> Iterator[tuple[tuple[int, int], list[tuple[str, TensorRef]]]]:
    group: list[tuple[str, TensorRef]] = []
    for item in order:
        if group and group[0][1].storage.region != item[1].storage.region:
            yield group[0][1].storage.region, group
            group = []
        group.append(item)
    if group:
        yield group[0][1].storage.region, group


def _streamable(group: list[tuple[str, TensorRef]]) -> bool:
    if len(group) != 1:
        return False
    ref = group[0][1]
    st = ref.storage
    return (
        st.data is None
        and st.swap <= 1
        and not ref.neg
        and not ref.conj
        and ref.is_contiguous()
        and ref.offset == 0
        and ref.nbytes == st.nbytes
        and (st.offset, st.offset + st.nbytes) == st.region
    )


class _Pass:
    """Hashes the mapped source in file order and drops pages once they are done with."""

    def __init__(self, mapped: Mapped) -> None:
        self.view = mapped.view
        self.mm = mapped.mapped
        self.hasher = hashlib.sha256()
        self.pos = 0
        self.check_time = mapped.check_time

    def drop(self, start: int, end: int) -> None:
        lo = start - start % _PAGE
        if end > lo:
            self.mm.madvise(mmap.MADV_DONTNEED, lo, end - lo)

    def hash_to(self, end: int, out: IO[bytes] | None = None) -> None:
        while self.pos < end:
            stop = min(end, self.pos + _CHUNK)
            chunk = self.view[self.pos : stop]
            self.hasher.update(chunk)
            if out is not None:
                out.write(chunk)
            chunk.release()
            self.drop(self.pos, stop)
            self.pos = stop
            self.check_time()


def _write(mapped: Mapped, plan: dict[str, TensorRef], src: Path, dst: Path, force: bool) -> Converted:

    order = _layout(plan)
    header, sha_at = _header(order, src)
    tmp = dst.parent / f".{dst.name}.airlock-{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    written: dict[str, int] = {}
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(len(header).to_bytes(8, "little"))
            out.write(header)
            walk = _Pass(mapped)
            for region, group in _groups(order):
                if region[0] < walk.pos:
                    raise FormatError(f"storage bytes at {region} overlap bytes already read")
                walk.hash_to(region[0])
                if _streamable(group):
                    walk.hash_to(region[1], out)
                    written[group[0][0]] = group[0][1].nbytes
                    continue
                walk.hash_to(region[1])  # hashed; the pages are faulted back in from the page cache
                prepared: Prepared = {}  # swapped / negated storage copies, for this region only
                for name, ref in group:
                    _write_strided(out, raw_array(ref, walk.view, prepared), walk.check_time)
                    written[name] = ref.nbytes
                del prepared
                walk.drop(*region)
            walk.hash_to(len(walk.view))
            digest = walk.hasher.hexdigest()
            out.flush()
            os.pwrite(out.fileno(), digest.encode(), 8 + sha_at)
            os.fsync(out.fileno())
        _publish(tmp, dst, force)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return Converted(src, dst, written, digest)


def _publish(tmp: Path, dst: Path, force: bool) -> None:
    if force:
        os.replace(tmp, dst)
    else:
        try:
            os.link(tmp, dst)  # fails if dst appeared meanwhile: never clobbers
        except FileExistsError as exc:
            raise UsageError(f"{dst} exists; pass --force to replace it") from exc
        tmp.unlink()
    dirfd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
