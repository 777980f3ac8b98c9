"""An ONNX model run by onnxruntime (CPU provider), inside a job only.

External data files are not supported: the job has no path to the model folder, only the one file.
``state_dict`` reads the graph initializers with the ``onnx`` package.

Text: a ``tensor(string)`` input takes a byte-string tensor (an object array of ``bytes``, how
KServe ``BYTES`` arrive), each element strict UTF-8, decoded to ``str`` here: onnxruntime would
otherwise turn a ``bytes`` element into the text of its repr (``"b'abc'"``) without a word. A string
input given numbers, or a numeric input given byte strings, is refused before the graph runs.
String outputs come back as ``str`` elements and cross the channel as UTF-8 (``_messages``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from airlock.sandbox._runtimes.base import Loaded, NamedArrays

__all__ = ["RUNTIME"]


@dataclass(frozen=True)
class _Session:
    session: Any
    raw: bytes
    kind: str = "onnx"

    def summary(self) -> str:
        names = [i.name for i in self.session.get_inputs()]
        return f"ONNX graph, inputs {', '.join(names)}"

    def state_dict(self) -> NamedArrays:
        import onnx
        from onnx import numpy_helper

        model = onnx.load_model_from_string(self.raw)
        return [(init.name, np.asarray(numpy_helper.to_array(init))) for init in model.graph.initializer]

    def infer(self, inputs: dict[str, np.ndarray[Any, Any]]) -> NamedArrays:
        outputs = [o.name for o in self.session.get_outputs()]
        types = {i.name: i.type for i in self.session.get_inputs()}
        feed = {name: _feed(name, types.get(name), value) for name, value in inputs.items()}
        values = self.session.run(outputs, feed)
        return [(name, np.asarray(value)) for name, value in zip(outputs, values, strict=True)]


def _feed(name: str, declared: str | None, value: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``value`` as onnxruntime takes it for an input of type ``declared`` (``tensor(string)``, ...)."""
    text = value.dtype.kind == "O"
    if declared == "tensor(string)":
        if not text:
            raise TypeError(f"input {name!r} is tensor(string); got {value.dtype} numbers")
        decoded = np.empty(value.shape, dtype=object)
        flat = decoded.reshape(-1)
        for index, item in enumerate(value.reshape(-1).tolist()):
            if not isinstance(item, bytes):
                raise TypeError(f"input {name!r}: element {index} is not a byte string")
            try:
                flat[index] = item.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"input {name!r}: element {index} is not valid UTF-8") from None
        return decoded
    if text:
        raise TypeError(f"input {name!r} is {declared}; got byte strings")
    return value


def _no_telemetry() -> None:
    """onnxruntime (1.2x+ Linux wheels) starts Microsoft's 1DS telemetry when imported: a thread,
    a device id and a SQLite database under ``$HOME/.cache`` whose shared-memory index is mapped
    ``MAP_SHARED`` -- in the warm worker, so every job forked from it shared that memory with the
    worker and with each other (outside review 11). Off before the import; jobs also replace any
    shared mapping with a private copy (``privatise_shared_mappings``)."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"


class _OnnxRuntime:
    name = "onnx"
    files = 1

    def warm_up(self) -> None:
        _no_telemetry()
        importlib.import_module("onnxruntime")

    def load(self, files: Sequence[BinaryIO], definition: str | None, threads: int) -> Loaded:
        _no_telemetry()
        import onnxruntime  # type: ignore[import-untyped]

        raw = files[0].read()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(raw, sess_options=options, providers=["CPUExecutionProvider"])
        return _Session(session, raw)


RUNTIME = _OnnxRuntime()
