"""Build Keras models for the tests without Keras: the v3 zip layout and legacy HDF5 attributes."""

from __future__ import annotations

import base64
import io
import json
import marshal
import types
import zipfile
from pathlib import Path
from typing import Any

import h5py


def obj(
    module: str | None, class_name: str, config: Any, registered_name: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"class_name": class_name, "config": config}
    if module is not None:
        out = {"module": module, **out, "registered_name": registered_name}
    return out


def dense(name: str = "dense", activation: Any = "relu") -> dict[str, Any]:
    return obj(
        "keras.layers",
        "Dense",
        {
            "name": name,
            "trainable": True,
            "dtype": obj("keras", "DTypePolicy", {"name": "float32"}),
            "units": 2,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": obj("keras.initializers", "GlorotUniform", {"seed": None}),
            "bias_initializer": obj("keras.initializers", "Zeros", {}),
            "kernel_regularizer": obj("keras.regularizers", "L2", {"l2": 0.01}),
        },
    )


def functional(*layers: dict[str, Any]) -> dict[str, Any]:
    """A Keras 3 functional model config: an input layer, then ``layers`` (default one Dense)."""
    body = [
        obj(
            "keras.layers",
            "InputLayer",
            {"batch_shape": [None, 4], "dtype": "float32", "name": "input_layer"},
        )
    ]
    for given in layers or (dense(),):
        layer = dict(given)
        layer["inbound_nodes"] = [
            {
                "args": [
                    {
                        "class_name": "__keras_tensor__",
                        "config": {
                            "shape": [None, 4],
                            "dtype": "float32",
                            "keras_history": ["input_layer", 0, 0],
                        },
                    }
                ],
                "kwargs": {},
            }
        ]
        body.append(layer)
    model = obj(
        "keras.src.models.functional",
        "Functional",
        {"name": "functional", "trainable": True, "layers": body, "input_layers": [["input_layer", 0, 0]]},
        "Functional",
    )
    model["compile_config"] = {
        "optimizer": obj("keras.optimizers", "Adam", {"name": "adam", "learning_rate": 0.001}),
        "loss": "mse",
        "metrics": [obj("keras.metrics", "MeanSquaredError", {"name": "mse"})],
    }
    return model


def lambda_code(marker: Path) -> str:
    """base64 of a marshalled lambda that would create ``marker`` (what Keras' func_dump writes)."""
    source = f"lambda x: __import__('pathlib').Path({str(marker)!r}).touch()"
    module = compile(source, "<payload>", "eval")
    code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
    return base64.b64encode(marshal.dumps(code)).decode("ascii")


def lambda_layer_v3(marker: Path) -> dict[str, Any]:
    function = {
        "class_name": "__lambda__",
        "config": {"code": lambda_code(marker), "defaults": None, "closure": None},
    }
    return obj("keras.layers", "Lambda", {"name": "lambda", "function": function, "arguments": {}})


def lambda_layer_legacy(marker: Path) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "lambda",
        "function": [lambda_code(marker), None, None],
        "function_type": "lambda",
        "module": "__main__",
        "output_shape": None,
        "output_shape_type": "raw",
        "arguments": {},
    }
    return {"class_name": "Lambda", "config": config}


def write_keras(
    path: Path, config: dict[str, Any], *, first: str = "metadata.json", extra: dict[str, bytes] | None = None
) -> Path:
    """A .keras archive the way Keras 3 writes it: metadata.json, config.json, model.weights.h5."""
    weights = io.BytesIO()
    with h5py.File(weights, "w") as h5:
        h5.create_group("layers").create_group("dense").create_group("vars").create_dataset(
            "0", data=[1.0, 2.0]
        )
    members = {
        "metadata.json": json.dumps({"keras_version": "3.8.0", "date_saved": "2026-11-22@10:00:00"}).encode(),
        "config.json": json.dumps(config).encode(),
        "model.weights.h5": weights.getvalue(),
        **(extra or {}),
    }
    order = [first, *[name for name in members if name != first]]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in order:
            zf.writestr(name, members[name])
    return path


def write_h5(path: Path, config: dict[str, Any] | None, *, weights_only: bool = False) -> Path:
    """A legacy Keras HDF5 file: model_config stored as Keras 2 does (JSON encoded to UTF-8 bytes)."""
    with h5py.File(path, "w") as h5:
        if config is not None:
            h5.attrs["model_config"] = json.dumps(config).encode("utf8")
            h5.attrs["training_config"] = json.dumps(
                {"loss": "mse", "optimizer_config": {"class_name": "Adam", "config": {}}}
            ).encode("utf8")
            h5.attrs["keras_version"] = b"2.15.0"
        group = h5.create_group("model_weights")
        if weights_only:
            h5.attrs["layer_names"] = [b"dense"]
        group.create_dataset("kernel", data=[1.0, 2.0])
    return path


def legacy_sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    base = [
        {
            "class_name": "InputLayer",
            "config": {"batch_input_shape": [None, 4], "dtype": "float32", "name": "input_1"},
        },
        {
            "class_name": "Dense",
            "config": {
                "name": "dense",
                "units": 2,
                "activation": "relu",
                "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                "bias_initializer": {"class_name": "Zeros", "config": {}},
            },
        },
    ]
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": base + list(layers)}}
