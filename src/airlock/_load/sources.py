"""Open a model file once, analyse exactly those bytes, and plan its tensors (no tensor bytes read).

The file is opened once and memory-mapped; the scanner's analysis runs over that mapping, then
the same mapping is parsed for tensors: what was checked is what is loaded (nothing re-opens the
path). The plan maps each tensor name to a :class:`~airlock._load.model.TensorRef`, a view over
byte ranges of the mapping, proven to lie inside them.
"""

from __future__ import annotations

import importlib
import mmap
import os
import stat
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from airlock._analysis.pickle_vm import Machine, PickleResult
from airlock._formats.base import ReadContext
from airlock._formats.npy import MAGIC as NPY_MAGIC
from airlock._formats.npy import _header_fields, dtype_info
from airlock._formats.pickle import is_legacy_magic
from airlock._formats.pyliteral import parse_literal
from airlock._formats.registry import format_named
from airlock._formats.zip import STORED, ZipListing, ZipMember, member_bytes, parse_zip
from airlock._formats.zip_reader import _torch_prefix
from airlock._load.dtypes import DTYPES, QUANTIZED_STORAGES, STORAGE_TYPES, DType, dtype_from_numpy
from airlock._load.graph import Quantized, StorageType, TypedStorage, realise
from airlock._load.model import Storage, TensorRef, check_view, contiguous_strides
from airlock._scan.collect import Collector
from airlock._scan.engine import _scan_data
from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError, LimitError, PolicyError, UsageError
from airlock.limits import Limits
from airlock.policy import Policy
from airlock.results import FileReport, Severity, Verdict

__all__ = [
    "Mapped",
    "open_checked",
    "plan_legacy",
    "plan_npy",
    "plan_pickle",
    "plan_safetensors",
    "plan_tensors",
    "plan_zip",
]

_ST_DTYPES: Final = {d.safetensors: d for d in DTYPES.values() if d.safetensors}


@dataclass
class Mapped:
    """One opened, mapped and analysed file."""

    path: Path
    size: int
    mapped: mmap.mmap
    view: memoryview
    report: FileReport
    #: the name of the format that recognised the content (its record: ``registry.format_named``)
    format: str | None
    check_time: Callable[[], None]


@contextmanager
def open_checked(path: Path, limits: Limits, policy: Policy, *, writable: bool) -> Iterator[Mapped]:
    """Open and map ``path`` and run the scanner over the mapping.

    Raises PolicyError when the scan finds anything MALICIOUS or SUSPICIOUS (naming the first
    such finding) and FormatError when it ends in an error. ``writable``: map copy-on-write, so
    arrays over the mapping are writable and writes never reach the file.
    """
    try:
        # O_NONBLOCK: a FIFO must not block the open; it is refused as not regular just below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path} is not a regular file")
        if info.st_size == 0:
            raise FormatError(f"{path} is empty: nothing to load")
        access = mmap.ACCESS_COPY if writable else mmap.ACCESS_READ
        mapped = mmap.mmap(fd, info.st_size, access=access)
    finally:
        os.close(fd)
    start = time.monotonic()
    deadline = start + limits.max_seconds_per_file

    def check_time() -> None:
        if time.monotonic() > deadline:
            raise LimitError(
                f"loading took longer than {limits.max_seconds_per_file} s (limit max_seconds_per_file)"
            )

    view = memoryview(mapped)
    try:
        collector = Collector(str(path), limits)
        ctx = ReadContext(limits=limits, file_path=path, root=path.parent, check_time=check_time)
        fmt = _scan_data(view, ctx, collector, policy, top_name=path.name)
        report = collector.report(fmt, info.st_size, time.monotonic() - start)
        require_clean(report)
        yield Mapped(path, info.st_size, mapped, view, report, fmt, check_time)
    finally:
        # Arrays handed to the caller keep their own exports of the mapping alive.
        view.release()


def require_clean(report: FileReport) -> None:
    """Refuse anything the scanner did not call CLEAN, naming the worst finding."""
    if report.verdict is Verdict.CLEAN:
        return
    order = (Severity.MALICIOUS, Severity.SUSPICIOUS, Severity.ERROR)
    worst = sorted((f for f in report.findings if f.severity in order), key=lambda f: order.index(f.severity))
    if not worst:
        raise FormatError(f"{report.path}: scan verdict {report.verdict.value}")
    first = worst[0]
    more = f" (and {len(worst) - 1} more findings)" if len(worst) > 1 else ""
    text = f"{first.location}: {first.rule} [{first.severity.value}]: {first.message}{more}"
    if first.severity is Severity.ERROR:
        raise FormatError(f"scan error, refusing to load: {text}")
    raise PolicyError(f"refusing to load: {text}")


def plan_tensors(m: Mapped, limits: Limits, allow: frozenset[str]) -> dict[str, TensorRef]:
    """Every tensor in the file by flattened name, as views proven to lie inside their bytes.
    The format's record (``_formats/registry.py``) names the planner for its content."""
    fmt = format_named(m.format)
    if fmt is None or fmt.planner is None:
        raise FormatError(f"{m.path}: format {m.format or 'unknown'} holds no tensors airlock.load can read")
    module, _, function = fmt.planner.partition(":")
    plan: Callable[[Mapped, Limits, frozenset[str]], dict[str, TensorRef]] = getattr(
        importlib.import_module(module), function
    )
    return plan(m, limits, allow)


def plan_zip(m: Mapped, limits: Limits, allow: frozenset[str]) -> dict[str, TensorRef]:
    """A torch.save zip, or an npz."""
    listing = parse_zip(m.view, limits, m.check_time)
    prefix = _torch_prefix(listing)
    if prefix is not None:
        return flatten(_torch_zip(listing, prefix, limits, allow, m.check_time))
    return _npz(listing, limits)


def plan_legacy(m: Mapped, limits: Limits, allow: frozenset[str]) -> dict[str, TensorRef]:
    """torch's legacy format: five pickles, then raw storages."""
    return flatten(_legacy(m.view, limits, allow, m.check_time))


def plan_pickle(m: Mapped, limits: Limits, allow: frozenset[str]) -> dict[str, TensorRef]:
    """A plain pickle of tensors or arrays (no persistent ids)."""
    result = Machine(m.view, limits, m.check_time).run(0)
    return flatten(realise(result, _no_pid, allow))


def plan_npy(m: Mapped, limits: Limits, allow: frozenset[str]) -> dict[str, TensorRef]:
    """One NumPy array."""
    return {"array": _npy(m.view, 0, len(m.view), limits, None, "array")}


def plan_safetensors(m: Mapped, limits: Limits, allow: frozenset[str]) -> dict[str, TensorRef]:
    """A safetensors file."""
    return _safetensors(m.view, limits)


def _no_pid(pid: tuple[object, ...], offset: int) -> TypedStorage:
    raise FormatError(f"persistent id at offset {offset} in a plain pickle: no loader defines it")


def _storage_dtype(kind: object, where: str) -> tuple[DType, str | None]:
    """The dtype a storage class holds, and its quantized torch dtype (``qint8``) or None."""
    if not isinstance(kind, StorageType):
        raise FormatError(f"{where}: storage type is not a torch storage class")
    quantized = QUANTIZED_STORAGES.get(kind.name)
    if quantized is not None:
        qname, rep = quantized
        if rep is None:
            raise FormatError(
                f"{where}: torch.{kind.name} holds packed {qname} data; airlock.load refuses it"
            )
        return DTYPES[rep], qname
    name = STORAGE_TYPES.get(kind.name)
    if name is None:
        raise FormatError(f"{where}: unknown storage type torch.{kind.name}")
    return DTYPES[name], None


def _one(listing: ZipListing, name: str) -> ZipMember | None:
    found = listing.find(name, case_insensitive=True)
    if len(found) > 1:  # the scanner reports it too; never guess which copy torch reads
        raise PolicyError(f"zip member {name!r} appears {len(found)} times")
    return found[0] if found else None


def _torch_zip(
    listing: ZipListing, prefix: str, limits: Limits, allow: frozenset[str], check_time: Callable[[], None]
) -> object:
    main = _one(listing, f"{prefix}/data.pkl")
    assert main is not None  # _torch_prefix requires it
    big = False
    record = _one(listing, f"{prefix}/byteorder")
    if record is not None:
        order = bytes(member_bytes(listing, record, limits))
        if order not in (b"little", b"big"):
            raise FormatError(f"byteorder record holds {order[:16]!r}, expected b'little' or b'big'")
        big = order == b"big"
    # torch's loader keeps one storage object per key: the first reference loads it (its type
    # sets the dtype, the record must hold exactly numel x itemsize bytes, a big-endian file is
    # swapped in that type's units) and every later reference gets that same object back,
    # whatever type or size it names. Empty storages are not kept (torch caches a storage only
    # when its data pointer is not null), so each reference to one makes its own.
    loaded: dict[str, TypedStorage] = {}

    def resolve(pid: tuple[object, ...], offset: int) -> TypedStorage:
        where = f"storage persistent id at pickle offset {offset}"
        if len(pid) != 5 or pid[0] != "storage":
            raise FormatError(
                f"{where}: expected ('storage', type, key, location, numel), got {len(pid)} fields"
            )
        _, kind, key, location, numel = pid
        dtype, quantized = _storage_dtype(kind, where)
        if not isinstance(key, str) or not key or "/" in key or not isinstance(location, str):
            raise FormatError(f"{where}: storage key {key!r:.40} or location is malformed")
        if type(numel) is not int or numel < 0:
            raise FormatError(f"{where}: element count {numel!r:.40} is not a non-negative integer")
        found = loaded.get(key)
        if found is not None:
            return found
        nbytes = numel * dtype.itemsize
        member = _one(listing, f"{prefix}/data/{key}")
        if member is None:
            raise FormatError(f"{where}: no member {prefix}/data/{key} holds storage {key!r}")
        region = (member.data_offset, member.data_end)
        if member.uncompressed_size != nbytes:
            raise FormatError(
                f"{where}: storage {key!r} is {numel} x {dtype.itemsize} = {nbytes} bytes, "
                f"its member holds {member.uncompressed_size}"
            )
        swap = dtype.swap_unit if big else 1
        if member.method == STORED:
            storage = Storage(key, nbytes, member.data_offset, region, swap)
        else:
            data = bytes(member_bytes(listing, member, limits))
            storage = Storage(key, len(data), 0, region, swap, data)
        typed = TypedStorage(storage, dtype, quantized)
        if nbytes:
            loaded[key] = typed
        return typed

    pickled = member_bytes(listing, main, limits)
    view = pickled if isinstance(pickled, memoryview) else memoryview(pickled)
    result = Machine(view, limits, check_time).run(0)
    return realise(result, resolve, allow)


def _legacy(
    view: memoryview, limits: Limits, allow: frozenset[str], check_time: Callable[[], None]
) -> object:
    if not is_legacy_magic(bytes(view[:32])):
        raise FormatError("not a torch legacy file: magic number missing")
    results: list[PickleResult] = []
    pos = 0
    for index in range(5):
        result = Machine(view, limits, check_time).run(pos)
        if result.error is not None:
            raise FormatError(f"torch legacy pickle #{index + 1}: {result.error}", offset=result.error.offset)
        results.append(result)
        pos = result.end
    protocol = realise(results[1], _no_pid, frozenset())
    if protocol != 1001:
        raise FormatError(f"torch legacy protocol version {protocol!r:.20}, expected 1001")
    keys = realise(results[4], _no_pid, frozenset())
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise FormatError("torch legacy storage key list is not a list of distinct strings")
    # Pass 1 replays torch's persistent_load over one table of storages by key, roots and views
    # alike, in stream order: the first reference to a key makes its object (a root's type fixes
    # its dtype and size; a view is a byte slice of whatever object its root key names), and
    # every later reference returns that object, whatever type, size or slice it names. The key
    # list then says which objects the raw records after the pickles fill; a record that would
    # fill a view, a duplicate, and a storage no record fills (torch leaves it uninitialised)
    # are refused.
    table: dict[str, _LegacyObject] = {}
    by_offset: dict[int, _LegacyObject] = {}

    def learn(pid: tuple[object, ...], offset: int) -> TypedStorage:
        key, dtype, numel, view_meta = _legacy_pid(pid, offset)
        root = table.get(key)
        if root is None:
            root = _LegacyObject(key, dtype, numel * dtype.itemsize, None, 0)
            table[key] = root
        elif root.nbytes == 0:
            root = _LegacyObject(key, dtype, 0, None, 0)  # torch: a fresh empty storage of this type
        obj = root
        if view_meta is not None:
            view_key, start, size = view_meta
            found = table.get(view_key)
            if found is None:
                lo, hi = start * dtype.itemsize, (start + size) * dtype.itemsize
                if hi > root.nbytes:
                    raise FormatError(
                        f"legacy storage view {view_key!r} [{lo}, {hi}) lies outside storage {key!r} "
                        f"({root.nbytes} bytes)"
                    )
                found = _LegacyObject(view_key, dtype, hi - lo, root, lo)
                table[view_key] = found
            obj = found
        by_offset[offset] = obj
        return TypedStorage(Storage(obj.key, obj.nbytes, 0, (0, 0)), obj.dtype)

    realise(results[3], learn, allow)
    placed: dict[int, Storage] = {}
    if len(set(keys)) != len(keys):
        raise FormatError("torch legacy storage key list names a storage twice")
    for key in keys:
        obj = table.get(key)
        if obj is None:
            raise FormatError(f"legacy storage key {key!r} is listed but no tensor uses it")
        if obj.root is not None:
            raise FormatError(f"legacy storage key {key!r} names a view, not a storage torch.save writes")
        if pos + 8 > len(view):
            raise FormatError(f"legacy storage {key!r}: record header at {pos} runs past the end", offset=pos)
        (count,) = struct.unpack_from("<q", view, pos)
        if count < 0 or count * obj.dtype.itemsize != obj.nbytes:
            raise FormatError(
                f"legacy storage {key!r}: record holds {count} elements, expected "
                f"{obj.nbytes // obj.dtype.itemsize}",
                offset=pos,
            )
        start = pos + 8
        if start + obj.nbytes > len(view):
            raise FormatError(
                f"legacy storage {key!r}: {obj.nbytes} bytes from offset {start} run past the end of the "
                f"{len(view)}-byte file",
                offset=pos,
            )
        placed[id(obj)] = Storage(key, obj.nbytes, start, (start, start + obj.nbytes))
        pos = start + obj.nbytes
    if pos != len(view):
        raise FormatError(f"{len(view) - pos} bytes after the last legacy storage record", offset=pos)

    def storage_of(obj: _LegacyObject) -> Storage:
        if obj.root is None:
            if obj.nbytes == 0:
                return Storage(obj.key, 0, 0, (0, 0))
            found = placed.get(id(obj))
            if found is None:
                raise FormatError(f"legacy storage {obj.key!r} is used but has no record")
            return found
        base = storage_of(obj.root)
        return Storage(obj.key, obj.nbytes, base.offset + obj.start, base.region)

    def resolve(pid: tuple[object, ...], offset: int) -> TypedStorage:
        obj = by_offset.get(offset)
        if obj is None:  # both passes resolve the same persistent ids; never expected
            raise FormatError(
                f"legacy persistent id at pickle offset {offset} was not seen in the first pass"
            )
        return TypedStorage(storage_of(obj), obj.dtype)

    return realise(results[3], resolve, allow)


@dataclass(frozen=True, eq=False)
class _LegacyObject:
    """One entry of torch's legacy ``deserialized_objects`` table: a root storage (``root`` None)
    or a byte slice ``[start, start + nbytes)`` of another entry."""

    key: str
    dtype: DType
    nbytes: int
    root: _LegacyObject | None
    start: int


def _legacy_pid(pid: tuple[object, ...], offset: int) -> tuple[str, DType, int, tuple[str, int, int] | None]:
    where = f"legacy persistent id at pickle offset {offset}"
    if not pid or pid[0] != "storage":
        kind = pid[0] if pid else None
        raise PolicyError(
            f"{where}: kind {kind!r:.20} is refused (only storages are loaded; 'module' ids carry source code)"
        )
    if len(pid) != 6:
        raise FormatError(f"{where}: expected 6 fields, got {len(pid)}")
    _, kind_v, key, location, numel, view_meta = pid
    if kind_v == StorageType("UntypedStorage"):
        # torch's legacy loader reads the dtype off the storage class; UntypedStorage has none
        raise FormatError(f"{where}: torch.UntypedStorage in a legacy file (torch cannot load it either)")
    dtype, quantized = _storage_dtype(kind_v, where)
    if quantized is not None:
        raise FormatError(f"{where}: a quantized storage in a legacy file is not supported by airlock.load")
    if not isinstance(key, str) or not isinstance(location, str) or type(numel) is not int or numel < 0:
        raise FormatError(f"{where}: malformed key, location or element count")
    if view_meta is None:
        return key, dtype, numel, None
    if (
        not isinstance(view_meta, tuple)
        or len(view_meta) != 3
        or not isinstance(view_meta[0], str)
        or not all(type(v) is int and v >= 0 for v in view_meta[1:])
    ):
        raise FormatError(f"{where}: view metadata {view_meta!r:.60} is not (key, offset, size)")
    return key, dtype, numel, (view_meta[0], view_meta[1], view_meta[2])


def _npy(view: memoryview, start: int, end: int, limits: Limits, region: tuple[int, int] | None, name: str,
         data: bytes | None = None) -> TensorRef:  # fmt: skip
    """One .npy at ``view[start:end]`` (or in ``data``); object and structured dtypes are refused."""
    buf = memoryview(data) if data is not None else view[start:end]
    size = len(buf)
    if size < 10 or bytes(buf[:6]) != NPY_MAGIC:
        raise FormatError(f"{name}: not an npy array")
    major = buf[6]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", buf, 8)
        head = 10
    elif major in (2, 3) and size >= 12:
        (hlen,) = struct.unpack_from("<I", buf, 8)
        head = 12
    else:
        raise FormatError(f"{name}: npy version {major} is not 1, 2 or 3")
    if hlen > limits.max_header_bytes or head + hlen > size:
        raise FormatError(f"{name}: npy header length {hlen} does not fit the {size}-byte array")
    text = bytes(buf[head : head + hlen]).decode("utf-8" if major == 3 else "latin-1")
    descr, fortran, shape = _header_fields(parse_literal(text, limits.max_header_bytes))
    _itemsize, has_object = dtype_info(descr)
    if has_object:
        raise PolicyError(f"{name}: npy object array (a pickle) is refused by airlock.load")
    if not isinstance(descr, str):
        raise FormatError(f"{name}: structured npy dtype {descr!r:.60} is not supported by airlock.load")
    dtype = dtype_from_numpy(descr)
    if dtype is None:
        raise FormatError(f"{name}: npy dtype {descr!r} is not supported by airlock.load")
    swap = dtype.swap_unit if descr.startswith(">") else 1
    data_start = head + hlen
    base = start if data is None else 0
    storage = Storage(name, size - data_start, base + data_start, region or (start, end), swap, data)
    strides = (
        contiguous_strides(shape)
        if not fortran
        else tuple(reversed(contiguous_strides(tuple(reversed(shape)))))
    )
    ref = check_view(name, storage, dtype, 0, shape, strides)
    if ref.nbytes != storage.nbytes:
        raise FormatError(f"{name}: npy data is {storage.nbytes} bytes, shape {shape} needs {ref.nbytes}")
    return ref


def _npz(listing: ZipListing, limits: Limits) -> dict[str, TensorRef]:
    out: dict[str, TensorRef] = {}
    for member in listing.members:
        if member.is_dir:
            continue
        if not member.name.endswith(".npy"):
            raise FormatError(f"zip member {member.name!r} is not an .npy array: not an npz file")
        name = member.name[:-4]
        if name in out:
            raise PolicyError(f"npz member {member.name!r} appears twice")
        region = (member.data_offset, member.data_end)
        if member.method == STORED:
            out[name] = _npy(listing.data, member.data_offset, member.data_end, limits, region, name)
        else:
            data = bytes(member_bytes(listing, member, limits))
            out[name] = _npy(listing.data, 0, 0, limits, region, name, data)
    return out


def _safetensors(view: memoryview, limits: Limits) -> dict[str, TensorRef]:
    # The scanner has validated the header (offsets tile the data exactly); parse it again here.
    length = int.from_bytes(view[:8], "little")
    if length > limits.max_header_bytes or 8 + length > len(view):
        raise FormatError(f"safetensors header length {length} does not fit the file")
    header = parse_json_strict(bytes(view[8 : 8 + length]), "safetensors header", offset=8)
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not an object")
    base = 8 + length
    out: dict[str, TensorRef] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise FormatError(f"safetensors tensor {name!r}: entry is not an object")
        dtype = _ST_DTYPES.get(info.get("dtype"))  # type: ignore[arg-type]
        if dtype is None:
            raise FormatError(
                f"safetensors tensor {name!r}: dtype {info.get('dtype')!r} is not supported by airlock.load"
            )
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        storage = Storage(name, end - begin, base + begin, (base + begin, base + end))
        ref = check_view(name, storage, dtype, 0, shape, contiguous_strides(shape))
        if ref.nbytes != storage.nbytes:
            raise FormatError(f"safetensors tensor {name!r}: {storage.nbytes} bytes for {ref.nbytes}")
        out[name] = ref
    return out


def flatten(value: object) -> dict[str, TensorRef]:
    """Tensors in nested dicts / lists / tuples by dotted name (keys spelled by ``str``); other
    leaves are dropped. Two tensors whose paths spell the same name are an error naming both."""
    out: dict[str, TensorRef] = {}
    paths: dict[str, tuple[object, ...]] = {}
    if isinstance(value, TensorRef):
        return {"tensor": value}
    if isinstance(value, Quantized):
        value = {"tensor": value}
    stack: list[tuple[tuple[object, ...], object]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, Quantized):
            for key, sub in reversed(list(item.extras.items())):
                stack.append(((*path, key), sub))
            stack.append((path, item.ref))
            continue
        if isinstance(item, TensorRef):
            name = ".".join(str(part) for part in path)
            if name in out:
                raise FormatError(
                    f"two tensors flatten to the same name {name!r}: keys {_spell(paths[name])} and {_spell(path)}"
                )
            out[name] = item
            paths[name] = path
        elif isinstance(item, dict):
            for key, sub in reversed(list(item.items())):
                stack.append(((*path, key), sub))
        elif isinstance(item, list | tuple):
            for index in range(len(item) - 1, -1, -1):
                stack.append(((*path, index), item[index]))
    return out


def _spell(path: tuple[object, ...]) -> str:
    return "".join(f"[{part!r:.60}]" for part in path) or "(the root)"
