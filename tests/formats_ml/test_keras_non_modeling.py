"""Keras functions that are not a model's building blocks (outside review 23).

Keras 3.9-3.11 in safe mode resolve a config's ``{"module": "keras.utils", "class_name":
"function", "config": "save_img"}`` through Keras' exported names and hand the function to the
layer that named it; a ``Lambda`` calls it with its inbound node's kwargs (any JSON value) and its
``arguments``, so a config writes an image to any host path when the model loads (shown with
Keras 3.10.0, torch backend). Keras 3.12 refuses these names itself (``NON_MODELING_APIS``). The
scanner judged every name inside Keras' packages fine unless it was on a short list, so the
function was clean. Now a ``function`` inside Keras' packages must come from one of its modeling
modules (an allowlist), and Keras' own list of non-modeling APIs is MALICIOUS.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airlock import Verdict
from tests.formats_ml.helpers import assert_clean, only, scan_one
from tests.formats_ml.kerasgen import dense, functional, obj

#: keras/src/saving/serialization_lib.py NON_MODELING_APIS (Keras 3.12+), minus the names that
#: were already caught (get_file, enable_unsafe_deserialization, load_model)
NON_MODELING = """keras.backend.clear_session keras.models.model_from_json keras.models.save_model
keras.preprocessing.image.load_img keras.preprocessing.image.save_img
keras.preprocessing.image_dataset_from_directory keras.preprocessing.text_dataset_from_directory
keras.saving.deserialize_keras_object keras.saving.load_weights keras.saving.register_keras_serializable
keras.saving.save_model keras.saving.save_weights keras.saving.serialize_keras_object
keras.utils.audio_dataset_from_directory keras.utils.clear_session keras.utils.deserialize_keras_object
keras.utils.image_dataset_from_directory keras.utils.load_img keras.utils.register_keras_serializable
keras.utils.save_img keras.utils.serialize_keras_object keras.utils.text_dataset_from_directory""".split()


def _keras_310() -> bool:
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("PIL") is None:
        return False
    version = tuple(int(p) for p in importlib.metadata.version("keras").split(".")[:2])
    return (3, 9) <= version < (3, 12)


def _scan(tmp_path: Path, config: dict[str, Any], name: str = "model.json") -> Any:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return scan_one(path)


def _save_img_model(target: str) -> dict[str, Any]:
    """A functional model whose Lambda calls keras.utils.save_img(target, x=[[[0.0]]])."""
    fn = obj("keras.utils", "function", "save_img", "save_img")
    pixels = {"class_name": "__numpy__", "config": {"value": [[[0.0]]], "dtype": "float32"}}
    lam = obj("keras.layers", "Lambda", {"name": "lam", "function": fn, "arguments": {"x": pixels}})
    lam.update(name="lam", inbound_nodes=[{"args": [], "kwargs": {"inputs": target}}])
    inp = obj(
        "keras.layers", "InputLayer", {"batch_shape": [None, 2], "dtype": "float32", "name": "input_layer"}
    )
    inp.update(name="input_layer", inbound_nodes=[])
    config = {"name": "f", "trainable": True, "layers": [inp, lam], "input_layers": [["input_layer", 0, 0]],
              "output_layers": [["lam", 0, 0]]}  # fmt: skip
    return obj("keras.src.models.functional", "Functional", config, "Functional")


@pytest.mark.parametrize("dotted", NON_MODELING)
def test_keras_non_modeling_apis_are_malicious(tmp_path: Path, dotted: str) -> None:
    module, _, name = dotted.rpartition(".")
    report = _scan(tmp_path, functional(dense(activation=obj(module, "function", name, name))))
    assert report.verdict is Verdict.MALICIOUS
    assert only(report, "keras.unsafe-module").callable == dotted


@pytest.mark.parametrize(
    ("module", "name", "clean"),
    [
        ("keras.activations", "relu", True),
        ("keras.src.activations.activations", "gelu", True),
        ("keras.src.ops.numpy", "abs", True),
        ("keras.losses", "mean_squared_error", True),
        ("keras.src.metrics.regression_metrics", "mean_absolute_error", True),
        ("tf_keras.src.activations", "relu", True),
        ("keras_hub.src.utils.keras_utils", "gelu_approximate", True),
        ("keras_hub.src.layers.modeling.transformer_layer_utils", "compute_causal_mask", True),
        # near misses and non-modeling homes
        ("keras.activationsx", "relu", False),
        ("keras.src.utils.image_utils", "save_img", False),
        ("keras.src.utils.dataset_utils", "split_dataset", False),
        ("keras.applications.resnet", "ResNet50", False),
        ("keras.models", "clone_model", False),
        ("keras.config", "set_backend", False),
        ("keras_hub.src.utils.preset_utils", "load_serialized_object", False),
        ("keras_hub.utils", "upload_preset", False),
    ],
)
def test_keras_functions_come_from_modeling_modules(
    tmp_path: Path, module: str, name: str, clean: bool
) -> None:
    report = _scan(tmp_path, functional(dense(activation=obj(module, "function", name, name))))
    if clean:
        assert_clean(report)
    else:
        assert report.verdict is Verdict.SUSPICIOUS
        finding = only(report, "keras.custom-object")
        assert finding.callable == f"{module}.{name}"
        assert "outside its modeling modules" in finding.message


def test_a_keras_class_outside_the_modeling_modules_is_still_judged_as_before(tmp_path: Path) -> None:
    """The allowlist is for functions: Keras' classes (``from_config``) keep their judgement."""
    layer = obj("keras.src.layers.core.dense", "Dense", {"name": "d", "units": 1})
    assert_clean(_scan(tmp_path, functional(layer)))


def test_lambda_calling_save_img_with_a_host_path_is_malicious(tmp_path: Path) -> None:
    target = tmp_path / "written.png"
    report = _scan(tmp_path, _save_img_model(str(target)))
    assert report.verdict is Verdict.MALICIOUS
    assert only(report, "keras.unsafe-module").callable == "keras.utils.save_img"


@pytest.mark.skipif(not _keras_310(), reason="needs Keras 3.9-3.11 and Pillow (3.12 refuses the name)")
def test_real_keras_310_writes_the_file_in_safe_mode(tmp_path: Path) -> None:
    import zipfile

    target, archive = tmp_path / "written.png", tmp_path / "m.keras"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.10.0"}))
        zf.writestr("config.json", json.dumps(_save_img_model(str(target))))
    code = "import sys, keras\ntry:\n    keras.saving.load_model(sys.argv[1])\nexcept Exception:\n    pass\n"
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    subprocess.run([sys.executable, "-c", code, str(archive)], env=env, timeout=300, check=False)
    assert target.exists()  # safe_mode=True (the default): save_img ran with the config's path
    assert scan_one(archive).verdict is Verdict.MALICIOUS
