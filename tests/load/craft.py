"""Hand-built torch checkpoints (zip and legacy) with any storage keys, types, views and metadata.

Fixtures only: the files are written with the stdlib pickler and zipfile (writing, never reading
untrusted bytes), and :func:`torch_load` proves what ``torch.load(weights_only=True)`` makes of
them in throwaway subprocesses, many files per process.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class St:
    """A storage persistent id: ``kind`` is a torch storage class name (``FloatStorage``)."""

    kind: str
    key: str
    numel: int
    location: str = "cpu"
    #: legacy files only: (view key, offset, size) in elements
    view: tuple[str, int, int] | None = None


@dataclass
class T:
    """A tensor rebuilt by ``torch._utils._rebuild_tensor_v2`` (or ``_v3`` with ``dtype``)."""

    storage: St
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str | None = None
    meta: dict[str, bool] = field(default_factory=dict)

    def __reduce__(self) -> tuple[Any, ...]:
        import torch

        hooks = collections.OrderedDict()  # type: ignore[var-annotated]
        if self.dtype is not None:
            args: tuple[Any, ...] = (
                self.storage,
                self.offset,
                self.size,
                self.stride,
                False,
                hooks,
                getattr(torch, self.dtype),
            )
            if self.meta:
                args += (self.meta,)
            return (torch._utils._rebuild_tensor_v3, args)
        args = (self.storage, self.offset, self.size, self.stride, False, hooks)
        if self.meta:
            args += (self.meta,)
        return (torch._utils._rebuild_tensor_v2, args)


class _Pickler(pickle.Pickler):
    legacy = False

    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, St):
            import torch

            kind = getattr(torch, obj.kind)
            pid: tuple[object, ...] = ("storage", kind, obj.key, obj.location, obj.numel)
            return (*pid, obj.view) if self.legacy else pid
        return None


def dumps(obj: object, protocol: int = 2, legacy: bool = False) -> bytes:
    out = io.BytesIO()
    pickler = _Pickler(out, protocol=protocol)
    pickler.legacy = legacy
    pickler.dump(obj)
    return out.getvalue()


def torch_zip(
    obj: object,
    storages: dict[str, bytes],
    *,
    protocol: int = 2,
    byteorder: bytes | None = b"little",
    deflate: bool = False,
    prefix: str = "archive",
    popped: St | None = None,
) -> bytes:
    """A torch zip checkpoint: ``data.pkl`` pickles ``obj``; ``data/<key>`` holds ``storages[key]``.
    ``popped``: a storage persistent id loaded (and POPped) before ``obj``, never used."""
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    pickled = dumps(obj, protocol)
    if popped is not None:
        pickled = pickled[:2] + dumps(popped, protocol)[2:-1] + b"0" + pickled[2:]
    with zipfile.ZipFile(out, "w", compression=method) as zf:
        zf.writestr(f"{prefix}/data.pkl", pickled)
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in storages.items():
            zf.writestr(f"{prefix}/data/{key}", data)
        zf.writestr(f"{prefix}/version", b"3\n")
    return out.getvalue()


def legacy(
    obj: object, records: list[tuple[str, int, bytes]], *, protocol: int = 2, keys: list[str] | None = None
) -> bytes:
    """A pre-1.6 torch file: magic, protocol, sys info, ``obj``, the key list, then one
    ``(element count, bytes)`` record per key."""
    parts = [
        pickle.dumps(LEGACY_MAGIC, protocol=protocol),
        pickle.dumps(1001, protocol=protocol),
        pickle.dumps(
            {
                "protocol_version": 1001,
                "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4},
            },
            protocol=protocol,
        ),
        dumps(obj, protocol, legacy=True),
        pickle.dumps(keys if keys is not None else [k for k, _, _ in records], protocol=protocol),
    ]
    for _key, count, data in records:
        parts.append(struct.pack("<q", count) + data)
    return b"".join(parts)


_RUNNER = r"""
import hashlib, json, sys, warnings
warnings.simplefilter("ignore")
import torch

def flat(value, prefix, out):
    if isinstance(value, torch.Tensor):
        out[prefix or "tensor"] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            flat(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            flat(v, f"{prefix}.{i}" if prefix else str(i), out)

def components(name, t, out):
    # what airlock.load gives for a quantized or sparse tensor: its parts as dense tensors
    if t.is_quantized:
        out[name] = t.int_repr()
        if t.qscheme() == torch.per_tensor_affine:
            out[name + ".scale"] = torch.tensor(t.q_scale(), dtype=torch.float64)
            out[name + ".zero_point"] = torch.tensor(t.q_zero_point(), dtype=torch.int64)
        else:
            out[name + ".scales"] = t.q_per_channel_scales()
            out[name + ".zero_points"] = t.q_per_channel_zero_points()
            out[name + ".axis"] = torch.tensor(t.q_per_channel_axis(), dtype=torch.int64)
        return True
    layout = str(t.layout)
    if layout == "torch.sparse_coo":
        parts = {"indices": t._indices(), "values": t._values()}
    elif layout in ("torch.sparse_csr", "torch.sparse_bsr"):
        parts = {"crow_indices": t.crow_indices(), "col_indices": t.col_indices(), "values": t.values()}
    elif layout in ("torch.sparse_csc", "torch.sparse_bsc"):
        parts = {"ccol_indices": t.ccol_indices(), "row_indices": t.row_indices(), "values": t.values()}
    else:
        return False
    for key, part in parts.items():
        out[name + "." + key] = part
    out[name + ".size"] = torch.tensor(list(t.shape), dtype=torch.int64)
    return True

def digest(t):
    t = t.detach()
    t = t.resolve_conj().resolve_neg().contiguous()
    raw = t.as_strided((t.numel(),), (1,)).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return hashlib.sha256(raw).hexdigest()

def load(path):
    try:
        return torch.load(path, weights_only=True), "weights_only"
    except Exception as exc:
        # torch's weights-only unpickler knows only the opcodes of protocols 2 and 3 (no FRAME,
        # MEMOIZE, ...). For files of protocol 4 and 5, which torch.save writes on request, the
        # full unpickler shows what torch makes of the same storages (these are generated,
        # harmless files, loaded in this throwaway process).
        if "Unsupported operand" not in str(exc):
            raise
    return torch.load(path, weights_only=False), "full"

results = {}
for path in json.load(sys.stdin):
    try:
        out = {}
        value, via = load(path)
        flat(value, "", out)
        for name, t in list(out.items()):
            if t.is_quantized or t.layout != torch.strided:
                del out[name]
                components(name, t, out)
        row = {}
        for name, t in out.items():
            try:
                d = digest(t)
            except Exception as exc:
                d = "unresolvable: " + type(exc).__name__
            row[name] = [str(t.dtype).removeprefix("torch."), list(t.shape), d]
        results[path] = {"ok": row}
    except Exception as exc:
        results[path] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
json.dump(results, sys.stdout)
"""


def torch_load(paths: list[Path], timeout: float = 600) -> dict[str, dict[str, Any]]:
    """``torch.load(path, weights_only=True)`` of each file in one throwaway subprocess:
    ``{"ok": {name: [dtype, shape, sha256 of the resolved bytes]}}`` or ``{"error": text}``."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps([str(p) for p in paths]),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded: dict[str, dict[str, Any]] = json.loads(proc.stdout)
    return loaded


def airlock_load(path: Path) -> dict[str, Any]:
    """airlock.load's answer in the same shape as :func:`torch_load`'s (in this process)."""
    import hashlib

    import airlock
    from airlock.errors import AirlockError
    from tests.load.helpers import torch_bytes

    try:
        got = airlock.load(path, framework="pt")
    except AirlockError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "ok": {
            name: [
                str(t.dtype).removeprefix("torch."),
                list(t.shape),
                hashlib.sha256(torch_bytes(t)).hexdigest(),
            ]
            for name, t in got.items()
        }
    }
