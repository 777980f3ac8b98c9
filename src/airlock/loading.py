"""``airlock.load``: the tensors of a model file, without running anything the file contains.

No unpickler runs. The file is opened once and memory-mapped; the scanner analyses those bytes;
the symbolic pickle machine's object graph is walked and only tensor rebuild functions, storages,
OrderedDict, dtypes and a few constants are realised, by airlock's own code. Tensor bytes are
never copied when they can be viewed: arrays are copy-on-write views of the mapping (writing to
them never changes the file).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from airlock._load.arrays import Prepared, to_numpy, to_torch
from airlock._load.convert import Converted, convert_file
from airlock._load.folder import convert_folder
from airlock._load.sources import open_checked, plan_tensors
from airlock.errors import UsageError
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.policy import Policy

__all__ = ["Converted", "convert", "load"]


def load(
    path: str | os.PathLike[str],
    *,
    framework: Literal["np", "pt"] = "np",
    allow: Iterable[str] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Load every tensor of a model file as ``{dotted name: array}``.

    Reads torch zip and legacy checkpoints, plain pickles of numpy arrays, ``.npy`` / ``.npz``
    and safetensors. Nested containers are flattened to dotted names (``model.layer.0.weight``);
    non-tensor values (epochs, learning rates, strings) are left out. ``framework="np"`` gives
    numpy arrays (bfloat16 and float8 through ml_dtypes; dtypes numpy lacks as one-field
    structured arrays named after the torch dtype); ``"pt"`` gives torch tensors.

    ``allow`` names inert classes (``argparse.Namespace``) whose attributes may be read as plain
    dicts; they are never called. Raises :class:`~airlock.errors.PolicyError` naming the finding
    when the file holds anything else that is not allowlisted (MALICIOUS or SUSPICIOUS scan
    findings included), :class:`~airlock.errors.FormatError` when it does not parse or holds
    tensors airlock does not realise (sparse, quantized).
    """
    if framework not in ("np", "pt"):
        raise UsageError(f"framework must be 'np' or 'pt', got {framework!r}")
    allowed = frozenset(allow)
    policy = Policy(allow=allowed)
    with open_checked(Path(path), limits, policy, writable=True) as mapped:
        plan = plan_tensors(mapped, limits, allowed)
        convert = to_torch if framework == "pt" else to_numpy
        prepared: Prepared = {}  # one transformed copy per byte-swapped / negated storage
        return {name: convert(ref, mapped.view, prepared) for name, ref in plan.items()}


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    force: bool = False,
    allow: Iterable[str] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> list[Converted]:
    """Convert a checkpoint file, or a Hugging Face folder, to safetensors (see docs/convert.md).

    Every source file goes through :func:`load`'s checks; each output file is written atomically
    and records the source's sha256 in its metadata. Existing outputs are replaced only with
    ``force``.
    """
    source, target = Path(src), Path(dst)
    allowed = frozenset(allow)
    if source.is_dir():
        return convert_folder(source, target, force=force, allow=allowed, limits=limits)
    if target.is_dir():
        raise UsageError(f"{target} is a folder; give the output file name")
    return [convert_file(source, target, force=force, allow=allowed, limits=limits)]
