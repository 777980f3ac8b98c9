"""Ordinary checkpoints for the loader tests, built with torch (fixtures only; torch.save is fine here)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from tests.fixtures.benign import torch_saveable_dtypes


def dense_dtypes() -> list[Any]:
    return torch_saveable_dtypes()


def all_dtypes(path: Path) -> Path:
    """One tensor per dtype torch 2.13 saves densely, with non-trivial bit patterns."""
    import torch

    state = {}
    for dtype in dense_dtypes():
        raw = torch.arange(24, dtype=torch.uint8).mul(37).reshape(2, 3, 4)
        size = torch.empty(0, dtype=dtype).element_size()
        state[str(dtype).removeprefix("torch.")] = raw.view(-1)[: 24 // size * size].view(dtype).clone()
    torch.save(state, path)
    return path


def views(path: Path, *, legacy: bool = False) -> Path:
    """Tied weights, transposes, slices with offsets, a parameter, a conj/neg-bit tensor."""
    import torch

    w = torch.arange(30, dtype=torch.float32).reshape(5, 6)
    state: dict[str, Any] = {
        "w": w,
        "tied": w,
        "w_t": w.t(),
        "row": w[2:],
        "col": w[:, 3],
        "strided": w[::2, ::3],
        "param": torch.nn.Parameter(torch.linspace(0, 1, 7)),
        "nested": {"list": [w[1], torch.ones(2, dtype=torch.int64)], "scalar": torch.tensor(3.5)},
        "empty": torch.zeros(0, 4),
        "epoch": 7,
    }
    if not legacy:
        state["conj"] = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64).conj()
        state["neg"] = torch._neg_view(torch.tensor([1.0, -2.0]))
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def big_endian(path: Path) -> Path:
    """A checkpoint as torch writes it on a big-endian machine: byte-swapped storages, 'big' record."""
    import torch

    w = torch.linspace(-3, 3, 12).reshape(3, 4)
    state = {
        "f32": w,
        "f32_t": w.t(),
        "f64": torch.linspace(0, 1, 5, dtype=torch.float64),
        "i16": torch.arange(-4, 4, dtype=torch.int16),
        "c64": torch.tensor([1 + 2j, -3.5 + 0.25j], dtype=torch.complex64),
        "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "u8": torch.arange(5, dtype=torch.uint8),
    }
    # storage key (first-use order) -> size of the scalar units byte order applies to
    units = {"0": 4, "1": 8, "2": 2, "3": 4, "4": 2, "5": 1}
    plain = io.BytesIO()
    torch.save(state, plain)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain.getvalue())) as zin, zipfile.ZipFile(out, "w") as zout:
        prefix = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            data = zin.read(info)
            rel = info.filename[len(prefix) + 1 :]
            if rel == "byteorder":
                data = b"big"
            elif rel.startswith("data/"):
                data = _swap(data, units[rel[5:]])
            zout.writestr(info, data)
    path.write_bytes(out.getvalue())
    return path


def _swap(data: bytes, size: int) -> bytes:
    if size == 1:
        return data
    out = bytearray(data)
    for i in range(0, len(out), size):
        out[i : i + size] = out[i : i + size][::-1]
    return bytes(out)


def hf_sharded(folder: Path) -> Path:
    """A sharded Hugging Face folder with a tied embedding in both shards' index entries."""
    import json

    import torch

    folder.mkdir()
    shards = {
        "pytorch_model-00001-of-00002.bin": {"wte.weight": torch.randn(8, 4), "h.0.w": torch.randn(4, 4)},
        "pytorch_model-00002-of-00002.bin": {
            "h.1.w": torch.randn(4, 4).t(),
            "ln.b": torch.zeros(4, dtype=torch.bfloat16),
        },
    }
    weight_map = {}
    for name, state in shards.items():
        torch.save(state, folder / name)
        weight_map.update(dict.fromkeys(state, name))
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    return folder
