"""SavedModel assets whose filename leaves the assets folder (outside review 23).

``tf.saved_model.load`` opens every ``MetaGraphDef.asset_file_def`` as
``join(export_dir, "assets", filename)`` and initialises lookup tables from it while the model
loads: a filename ``../../x`` or ``/etc/x`` reads a host file into the model (whose functions can
hand it back, ``table.export()``). The scanner did not read ``asset_file_def``, so such a model was
CLEAN. Where TensorFlow is installed, the proof saves a real model with a vocabulary, points its
asset at a file outside the folder and loads it in a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock import Verdict
from airlock.results import FileReport, Severity
from tests.formats_ml.helpers import assert_clean, only, scan_one
from tests.formats_ml.tfgen import saved_model_with_assets

HAVE_TF = importlib.util.find_spec("tensorflow") is not None


def _scan(tmp_path: Path, data: bytes) -> FileReport:
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "saved_model.pb"
    path.write_bytes(data)
    return scan_one(path)


@pytest.mark.parametrize(
    ("filename", "problem"),
    [
        ("../../etc/hostname", "climbs out"),
        ("vocab/../../x.txt", "climbs out"),
        ("/etc/hostname", "absolute path"),
        ("\\\\server\\share\\x", "absolute path"),
        ("C:x.txt", "drive letter"),
        ("vocab.txt\x00../x", "NUL byte"),
    ],
)
def test_an_asset_outside_the_assets_folder_is_malicious(tmp_path: Path, filename: str, problem: str) -> None:
    report = _scan(tmp_path, saved_model_with_assets("vocab.txt", filename))
    assert report.verdict is Verdict.MALICIOUS
    finding = only(report, "savedmodel.asset-path")
    assert finding.severity is Severity.MALICIOUS
    assert problem in finding.message


@pytest.mark.parametrize("filename", ["vocab.txt", "sub/vocab.txt", "..vocab.txt", "vocab..txt", "a.b.c"])
def test_plain_asset_names_are_clean(tmp_path: Path, filename: str) -> None:
    assert_clean(_scan(tmp_path, saved_model_with_assets(filename)))


_PROOF = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
folder, vocab, filename, mode = sys.argv[1:5]
if mode == "build":
    class M(tf.Module):
        def __init__(self):
            init = tf.lookup.TextFileInitializer(vocab, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                                 tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
            self.table = tf.lookup.StaticHashTable(init, -1)
        @tf.function(input_signature=[])
        def export(self):
            return self.table.export()[0]
    tf.saved_model.save(M(), folder)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(open(os.path.join(folder, "saved_model.pb"), "rb").read())
    sm.meta_graphs[0].asset_file_def[0].filename = filename
    open(os.path.join(folder, "saved_model.pb"), "wb").write(sm.SerializeToString())
else:
    print(sorted(tf.saved_model.load(folder).export().numpy().tolist()))
"""


def _tf(*args: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", _PROOF, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(not HAVE_TF, reason="tensorflow is not installed")
def test_real_tensorflow_reads_the_host_file_that_the_scan_finds(tmp_path: Path) -> None:
    vocab, secret = tmp_path / "vocab.txt", tmp_path / "host-secret.txt"
    vocab.write_text("a\nb\n")
    secret.write_text("secret-line-1\nsecret-line-2\n")
    folder = tmp_path / "deep" / "model"
    folder.parent.mkdir()
    _tf(str(folder), str(vocab), "../../../host-secret.txt", "build")
    assert only(scan_one(folder / "saved_model.pb"), "savedmodel.asset-path").severity is Severity.MALICIOUS
    assert "secret-line-1" in _tf(str(folder), str(vocab), "", "load")  # the host file, read on load
