"""Seeded random torch checkpoints for the differential test against torch.load (fixtures only).

Each file mixes what a loader must get exactly right: storage types and the dtypes tensors view
them with (first reference wins), v2/v3 rebuilds, offsets, strides (transposed, stride 0,
overlapping), empty tensors, lazy neg/conj bits, shared tensors, nested containers with odd keys,
big-endian records, deflated members, legacy files with storage views, pickle protocols 2 to 5.
Some views fall outside their storage on purpose (torch refuses them; so must airlock).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.load.craft import St, T, legacy, torch_zip

#: storage class -> (dtype name, item size)
STORAGES: dict[str, tuple[str, int]] = {
    "FloatStorage": ("float32", 4), "DoubleStorage": ("float64", 8), "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1), "ComplexFloatStorage": ("complex64", 8),
    "ComplexDoubleStorage": ("complex128", 16), "UntypedStorage": ("uint8", 1),
}  # fmt: skip
#: dtypes a v3 rebuild may name (bool left out: arbitrary bytes are not valid booleans)
V3_DTYPES: dict[str, int] = {
    "float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
    "int8": 1, "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "complex32": 4, "complex64": 8,
    "complex128": 16, "float8_e5m2": 1, "float8_e4m3fn": 1, "bits16": 2, "bits8": 1,
}  # fmt: skip
_NEG_OK = {"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
           "complex64", "complex128"}  # fmt: skip
_COMPLEX = {"complex64", "complex128", "complex32"}
_SPECIAL = [b"\x01\x7c", b"\x01\xfc", b"\x81\x7f", b"\x01\x00\x80\x7f", b"\x00\x00\xc0\x7f", b"\x00\x80"]


@dataclass
class _Key:
    key: str
    kind: str
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * STORAGES[self.kind][1]


def _data(rng: random.Random, key: _Key) -> bytes:
    if key.kind == "BoolStorage":
        return bytes(rng.randint(0, 1) for _ in range(key.nbytes))
    out = bytearray(rng.randbytes(key.nbytes))
    for _ in range(rng.randint(0, 3)):  # NaN / signalling NaN / -0 patterns
        pat = rng.choice(_SPECIAL)
        if len(out) >= len(pat):
            at = rng.randrange(0, len(out) - len(pat) + 1) & ~(len(pat) - 1)
            out[at : at + len(pat)] = pat
    return bytes(out)


def _view(rng: random.Random, nbytes: int, size: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """offset, shape, stride (in elements of ``size`` bytes), mostly inside ``nbytes``."""
    room = max(nbytes // size, 0)
    ndim = rng.choice([0, 1, 1, 2, 2, 3])
    shape = tuple(rng.choice([0, 1, 1, 2, 2, 3, 4]) for _ in range(ndim))
    style = rng.random()
    if style < 0.5:
        stride_list, step = [], 1
        for n in reversed(shape):
            stride_list.append(step)
            step *= max(n, 1)
        stride = tuple(reversed(stride_list))
        if ndim == 2 and rng.random() < 0.4:
            stride = (stride[1], stride[0]) if shape[0] == shape[1] else stride
    elif style < 0.7:
        stride = tuple(rng.choice([0, 1]) for _ in shape)
    else:
        stride = tuple(rng.randint(0, 3) for _ in shape)

    def extent_of(shape: tuple[int, ...]) -> int:
        return 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) if all(shape) else 0

    if rng.random() < 0.95:  # shrink the largest dimension until the view fits (mostly)
        while shape and extent_of(shape) > room:
            big = max(range(len(shape)), key=lambda i: shape[i])
            shape = (*shape[:big], shape[big] - 1, *shape[big + 1 :])
    extent = extent_of(shape)
    offset = rng.randint(0, max(room - extent, 0)) if rng.random() < 0.9 else rng.randint(0, room + 2)
    return offset, shape, stride


def checkpoint(rng: random.Random) -> bytes:
    is_legacy = rng.random() < 0.3
    protocol = rng.choice([2, 2, 3, 4, 5])
    keys = [
        _Key(
            str(i) if rng.random() < 0.8 else f"k{i}",
            rng.choice(list(STORAGES)),
            rng.choice([0, 1, 2, 3, 4, 6, 8, 12]),
        )
        for i in range(rng.randint(1, 4))
    ]
    first: dict[str, _Key] = {}
    views: dict[str, tuple[str, int, int, int]] = {}  # legacy: view key -> (root, byte offset, nbytes, size)
    tensors: list[Any] = []
    for _ in range(rng.randint(1, 6)):
        key = rng.choice(keys)
        kind = key.kind if rng.random() < 0.75 else rng.choice(list(STORAGES))
        if is_legacy and "UntypedStorage" in (kind, key.kind) and rng.random() < 0.9:
            kind = key.kind = "FloatStorage"  # torch's legacy loader cannot read untyped storages
        ref_numel = key.numel if kind == key.kind else rng.choice([key.numel, 1, 2, 4])
        if kind == "BoolStorage" and key.key not in first:
            kind = key.kind
        owner = first.setdefault(key.key, _Key(key.key, kind, ref_numel if kind != key.kind else key.numel))
        meta: dict[str, bool] = {}
        dtype = None
        size = STORAGES[owner.kind][1]
        dname = STORAGES[owner.kind][0]
        if not is_legacy and rng.random() < 0.3:
            dtype = rng.choice(list(V3_DTYPES))
            size, dname = V3_DTYPES[dtype], dtype
        if rng.random() < 0.15 and dname in _NEG_OK:
            meta["neg"] = True
        if rng.random() < 0.15 and dname in _COMPLEX:
            meta["conj"] = True
        view = None
        nbytes = owner.nbytes
        if is_legacy and rng.random() < 0.25 and owner.numel:
            vkey = rng.choice([f"v{len(views)}", f"v{len(views)}", *views, key.key])
            start = rng.randint(0, owner.numel - 1)
            vsize = rng.randint(0, owner.numel - start)
            view = (vkey, start, vsize)
            if vkey not in views and vkey not in first:
                views[vkey] = (key.key, start * size, vsize * size, size)
            nbytes = vsize * size
        offset, shape, stride = _view(rng, nbytes, size)
        storage = St(kind, key.key, ref_numel, view=view)
        tensors.append(T(storage, offset, shape, stride, dtype=dtype, meta=meta))
    if rng.random() < 0.2 and tensors:
        tensors.append(rng.choice(tensors))  # the same tensor object twice (pickle memo)
    state: dict[Any, Any] = {}
    for index, tensor in enumerate(tensors):
        name: Any = rng.choice([f"t{index}", f"t{index}", index + 100, (index, "x"), float(index) + 0.5])
        if rng.random() < 0.3:
            state.setdefault("nested", {})[name] = [tensor] if rng.random() < 0.5 else (tensor, 7)
        else:
            state[name] = tensor
    state["epoch"] = rng.randint(0, 9)
    root: Any = state if rng.random() < 0.9 else list(state.values())
    data = {k.key: _data(rng, k) for k in first.values()}
    if is_legacy:
        order = list(first)
        records = [(k, first[k].numel, data[k]) for k in order]
        return legacy(root, records, protocol=protocol)
    byteorder = rng.choice([b"little", b"little", b"big", None])
    return torch_zip(root, data, protocol=protocol, byteorder=byteorder, deflate=rng.random() < 0.15)


#: airlock refusals that are documented (docs/convert.md), where torch loads something it cannot
#: resolve, or whose bytes torch makes up: it grows a storage a view reaches past (an empty one
#: in a zip, any root in a legacy file) with uninitialised memory
ALLOWED_REFUSALS = (
    "a lazy negation on a",
    "a lazy conjugation on a",
    "of a storage of 0 bytes",
    "depends on its CPU kernel",
)
#: ... and in legacy files only (torch also ignores bytes after the records it reads)
ALLOWED_LEGACY_REFUSALS = ("reaches byte", "lies outside storage", "after the last legacy storage record")


def compare(paths: list[Path], torch_says: dict[str, dict[str, Any]], airlock_says: dict[str, dict[str, Any]]) -> tuple[dict[str, int], list[str]]:  # fmt: skip
    """Counts of outcomes and the list of mismatches (empty when airlock agrees with torch)."""
    counts = {"same": 0, "both refused": 0, "refused (documented)": 0, "tensors": 0}
    bad: list[str] = []
    for path in paths:
        t, a = torch_says[str(path)], airlock_says[str(path)]
        if "ok" in t and "ok" in a:
            if t == a:
                counts["same"] += 1
                counts["tensors"] += len(a["ok"])
            else:
                bad.append(f"{path.name}: torch {t} != airlock {a}")
        elif "error" in t and "error" in a:
            counts["both refused"] += 1
        elif "ok" in t and any(
            reason in a["error"]
            for reason in ALLOWED_REFUSALS
            + (ALLOWED_LEGACY_REFUSALS if path.read_bytes()[:2] != b"PK" else ())
        ):
            counts["refused (documented)"] += 1
        else:
            bad.append(f"{path.name}: torch {str(t)[:300]} / airlock {str(a)[:300]}")
    return counts, bad


def run(seed: int, count: int, folder: Path, batch: int = 500) -> tuple[dict[str, int], list[str]]:
    from tests.load.craft import airlock_load, torch_load

    rng = random.Random(seed)  # noqa: S311 (fixtures, not secrets)
    paths = []
    for index in range(count):
        path = folder / f"g{seed}_{index}.pt"
        path.write_bytes(checkpoint(rng))
        paths.append(path)
    torch_says: dict[str, dict[str, Any]] = {}
    for start in range(0, len(paths), batch):
        torch_says.update(torch_load(paths[start : start + batch]))
    airlock_says = {str(p): airlock_load(p) for p in paths}
    return compare(paths, torch_says, airlock_says)
