"""The root attributes of an HDF5 file (legacy Keras ``.h5``), read with h5py inside a job only.

libhdf5 is C code with a history of memory-safety bugs, so the scanner never runs it in its own
process: it asks a sandboxed job for the attributes it analyses (``model_config``,
``training_config``) and whether the file has Keras' weights layout, and gets them back as bytes.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

import numpy as np

from airlock.errors import SandboxError
from airlock.sandbox._runtimes.base import Loaded, NamedArrays

__all__ = ["ATTRIBUTES", "RUNTIME"]

#: The root attributes handed back (as uint8 arrays of their stored bytes).
ATTRIBUTES: Final = ("model_config", "training_config")
#: Largest attribute handed back.
_MAX_ATTRIBUTE_BYTES: Final = 100 * 1024 * 1024


@dataclass(frozen=True)
class _Attributes:
    values: dict[str, bytes]
    keras_layout: bool
    kind: str = "attributes"

    def summary(self) -> str:
        return f"HDF5 root attributes {', '.join(sorted(self.values)) or '(none)'}"

    def state_dict(self) -> NamedArrays:
        arrays: NamedArrays = [(k, np.frombuffer(v, dtype=np.uint8).copy()) for k, v in self.values.items()]
        arrays.append(("keras_layout", np.array([1 if self.keras_layout else 0], dtype=np.uint8)))
        return arrays

    def infer(self, inputs: dict[str, np.ndarray[Any, Any]]) -> NamedArrays:
        raise SandboxError("hdf5-attributes: an attribute reader runs no model")


class _Hdf5Attributes:
    name = "hdf5-attributes"
    files = 1

    def warm_up(self) -> None:
        importlib.import_module("h5py")

    def load(self, files: Sequence[BinaryIO], definition: str | None, threads: int) -> Loaded:
        import h5py

        values: dict[str, bytes] = {}
        with h5py.File(files[0], "r") as h5:
            for key in ATTRIBUTES:
                if key not in h5.attrs:
                    continue
                if h5.attrs.get_id(key).get_storage_size() > _MAX_ATTRIBUTE_BYTES:
                    raise SandboxError(f"HDF5 attribute {key} is larger than {_MAX_ATTRIBUTE_BYTES} bytes")
                value = h5.attrs[key]
                if isinstance(value, str):
                    value = value.encode("utf-8", "surrogateescape")  # the stored bytes
                if not isinstance(value, bytes):
                    raise SandboxError(f"HDF5 attribute {key} is {type(value).__name__}, not a JSON string")
                values[key] = value
            keras_layout = "layer_names" in h5.attrs or bool({"layers", "vars"} & set(h5.keys()))
        return _Attributes(values, keras_layout)


RUNTIME = _Hdf5Attributes()
