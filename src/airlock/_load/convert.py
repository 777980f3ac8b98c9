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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from airlock import __version__
from airlock._load.arrays import raw_array, to_numpy
from airlock._load.model import TensorRef
from airlock._load.sources import Mapped, open_checked, plan_tensors
from airlock.errors import FormatError, UsageError
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
            if ref.dtype.safetensors is None:
                raise FormatError(
                    f"tensor {name!r}: safetensors has no {ref.dtype.name} dtype; cannot convert"
                )
        return _write(mapped, plan, src, dst, force)


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
        and not (st.big_endian and ref.dtype.swap_unit > 1)
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
    import numpy as np

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
                for name, ref in group:
                    if ref.neg or ref.conj:
                        arr = np.ascontiguousarray(to_numpy(ref, walk.view)).view(ref.dtype.carrier())
                    else:
                        arr = np.ascontiguousarray(raw_array(ref, walk.view))
                    out.write(arr.reshape(-1).view(np.uint8).data if arr.size else b"")
                    written[name] = ref.nbytes
                    del arr
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
