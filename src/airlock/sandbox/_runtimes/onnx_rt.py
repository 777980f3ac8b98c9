"""An ONNX model run by onnxruntime (CPU provider), inside a job only.

External data files are not supported: the job has no path to the model folder, only the one file.
``state_dict`` reads the graph initializers with the ``onnx`` package.
"""

from __future__ import annotations

import importlib
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
        values = self.session.run(outputs, dict(inputs))
        return [(name, np.asarray(value)) for name, value in zip(outputs, values, strict=True)]


class _OnnxRuntime:
    name = "onnx"
    files = 1

    def warm_up(self) -> None:
        importlib.import_module("onnxruntime")

    def load(self, files: Sequence[BinaryIO], definition: str | None, threads: int) -> Loaded:
        import onnxruntime  # type: ignore[import-untyped]

        raw = files[0].read()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(raw, sess_options=options, providers=["CPUExecutionProvider"])
        return _Session(session, raw)


RUNTIME = _OnnxRuntime()
