"""Convert a Hugging Face model folder: sharded ``pytorch_model-*.bin`` + index -> safetensors shards.

The index (``pytorch_model.bin.index.json``) is untrusted input: it is parsed strictly and every
shard it names must be a plain file name inside the folder (no path separators, no ``..``). The
tensors found in each shard must be exactly the ones the index assigns to it. Shards are written
first, each atomically; the new index last, so a reader never sees an index naming a missing shard.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Final

from airlock._load.convert import Converted, _publish, convert_file, safetensors_name
from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError, LimitError, UsageError
from airlock.limits import Limits

__all__ = ["convert_folder"]

_INDEX: Final = "pytorch_model.bin.index.json"
_SINGLE: Final = "pytorch_model.bin"
_OUT_INDEX: Final = "model.safetensors.index.json"


def _shard_name(name: object) -> str:
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or "\\" in name
        or name in (".", "..")
        or "\0" in name
    ):
        raise FormatError(f"index names shard {name!r:.80}, which is not a plain file name in the folder")
    return name


def convert_folder(
    src: Path, dst: Path, *, force: bool, allow: frozenset[str], limits: Limits
) -> list[Converted]:
    index_path = src / _INDEX
    if index_path.is_file():
        raw = index_path.read_bytes()
        if len(raw) > limits.max_header_bytes:
            raise LimitError(
                f"{index_path} is {len(raw)} bytes, more than {limits.max_header_bytes} (limit max_header_bytes)"
            )
        index = parse_json_strict(raw, str(index_path))
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise FormatError(f"{index_path}: 'weight_map' is not a non-empty object")
        shards: dict[str, set[str]] = {}
        for tensor, shard in weight_map.items():
            shards.setdefault(_shard_name(shard), set()).add(tensor)
    elif (src / _SINGLE).is_file():
        index = None
        shards = {_SINGLE: set()}
    else:
        raise UsageError(f"{src} holds neither {_INDEX} nor {_SINGLE}: nothing to convert")
    targets = {name: safetensors_name(name) for name in shards}
    if len(set(targets.values())) != len(targets):
        raise FormatError(f"{src}: two shards map to the same output name")
    outputs = [dst / t for t in targets.values()] + ([dst / _OUT_INDEX] if index is not None else [])
    existing = [p for p in outputs if p.exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} exists; pass --force to replace it")
    dst.mkdir(parents=True, exist_ok=True)
    results: list[Converted] = []
    new_map: dict[str, str] = {}
    for shard, names in shards.items():
        path = src / shard
        if path.is_symlink() and not path.resolve().is_relative_to(src.resolve()):
            raise FormatError(f"shard {shard} is a symlink leading out of {src}")
        done = convert_file(path, dst / targets[shard], force=force, allow=allow, limits=limits)
        if index is not None and set(done.tensors) != names:
            (dst / targets[shard]).unlink()
            extra = sorted(set(done.tensors) - names)[:3]
            missing = sorted(names - set(done.tensors))[:3]
            raise FormatError(
                f"shard {shard}: holds tensors the index does not list {extra} / lacks {missing}"
            )
        for name in done.tensors:
            new_map[name] = targets[shard]
        results.append(done)
    if index is not None:
        total = sum(r.nbytes for r in results)
        body = {
            "metadata": {"total_size": total, "airlock.source_index": _INDEX},
            "weight_map": dict(sorted(new_map.items())),
        }
        out = dst / _OUT_INDEX
        tmp = dst / f".{_OUT_INDEX}.airlock-{secrets.token_hex(6)}.tmp"
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(json.dumps(body, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, out, force)
    return results
