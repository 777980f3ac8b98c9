"""Keras configs that carry payloads: embedded files (Keras 3 ``TorchModuleWrapper`` keeps a
``torch.save`` archive in base64 and ``torch.load``s it with ``weights_only=False``), host paths a
layer opens, and ``--allow`` for custom Keras classes.

The ``TorchModuleWrapper`` layout is Keras 3's own (``keras/src/utils/torch_utils.py``:
``get_config`` stores ``base64.b64encode(torch.save bytes)`` under ``config["module"]``,
``from_config`` decodes it and calls ``torch.load(buffer, weights_only=False)``). Where Keras is
installed, each fixture is first loaded by Keras in a throwaway process to show the payload runs.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from airlock import Verdict
from airlock._cli import main
from airlock.results import Severity
from tests.formats_ml.helpers import scan_one
from tests.formats_ml.kerasgen import dense, functional, obj, write_keras

HAVE_KERAS = importlib.util.find_spec("keras") is not None


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def torch_module_wrapper(module_text: str, name: str = "torch_module_wrapper") -> dict[str, Any]:
    """A TorchModuleWrapper layer as Keras 3's get_config writes it."""
    return obj(
        "keras.layers",
        "TorchModuleWrapper",
        {
            "name": name,
            "trainable": True,
            "dtype": obj("keras", "DTypePolicy", {"name": "float32"}),
            "module": module_text,
            "output_shape": [None, 2],
        },
    )


def model(layer: dict[str, Any]) -> dict[str, Any]:
    """A Keras 3 Sequential model holding ``layer``, as ``model.to_json()`` writes it."""
    inp = obj(
        "keras.layers", "InputLayer", {"batch_shape": [None, 2], "dtype": "float32", "name": "input_layer"}
    )
    return obj("keras", "Sequential", {"name": "sequential", "trainable": True, "layers": [inp, layer]})


def _torch_saved(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _keras_load(path: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys, keras\nkeras.saving.load_model(sys.argv[1], safe_mode=False)\n"
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def _encodings(raw: bytes) -> dict[str, str]:
    return {"base64": base64.b64encode(raw).decode("ascii"), "hex": raw.hex()}


@pytest.mark.parametrize(
    ("payload", "encoding"),
    [("torch.save", "base64"), ("pickle-2", "base64"), ("pickle-0", "base64"), ("torch.save", "hex")],
)
def test_embedded_pickle_in_a_keras_config_is_scanned_and_malicious(
    tmp_path: Path, payload: str, encoding: str
) -> None:
    marker = tmp_path / "pwned"
    raw = {
        "torch.save": lambda: _torch_saved(_Payload(marker)),
        "pickle-2": lambda: pickle.dumps(_Payload(marker), protocol=2),
        "pickle-0": lambda: pickle.dumps(_Payload(marker), protocol=0),
    }[payload]()
    layer = torch_module_wrapper(_encodings(raw)[encoding])
    path = write_keras(tmp_path / "m.keras", model(layer))
    if HAVE_KERAS and encoding == "base64":
        done = _keras_load(path)
        assert marker.exists(), done.stderr[-3000:]
        marker.unlink()
    report = scan_one(path)
    assert report.verdict is Verdict.MALICIOUS
    hits = [f for f in report.findings if f.severity is Severity.MALICIOUS]
    assert {f.callable for f in hits} & {"os.system", "posix.system"}, hits
    assert any(f"module ({encoding})" in m for f in hits for m in f.location.members), hits
    assert not marker.exists()


def test_an_ordinary_torch_module_wrapper_is_analysed_not_malicious(tmp_path: Path) -> None:
    torch.manual_seed(0)
    raw = _torch_saved(torch.nn.Linear(2, 2))
    path = write_keras(tmp_path / "m.keras", model(torch_module_wrapper(base64.b64encode(raw).decode())))
    report = scan_one(path)
    assert report.verdict in (Verdict.CLEAN, Verdict.SUSPICIOUS), report
    assert "zip" in (report.format or ""), report.format  # the embedded torch.save archive was read


@pytest.mark.parametrize(
    "text",
    [
        "conv2d_transpose_12345678",
        "kernel_initializer_seed_42",
        "0123456789abcdef0123456789abcdef",  # a hash
        base64.b64encode(b"just some bytes that are not a file format").decode(),
    ],
)
def test_strings_that_decode_to_nothing_known_stay_clean(tmp_path: Path, text: str) -> None:
    report = scan_one(write_keras(tmp_path / "m.keras", functional(dense(name=text))))
    assert report.verdict is Verdict.CLEAN, report


def test_vocabulary_read_from_a_host_path_is_malicious(tmp_path: Path) -> None:
    vocab = tmp_path / "host_secret.txt"
    vocab.write_text("alpha\nbeta\n")
    layer = obj(
        "keras.layers", "StringLookup", {"name": "lookup", "vocabulary": str(vocab), "max_tokens": None}
    )
    path = write_keras(tmp_path / "m.keras", functional(layer))
    if HAVE_KERAS and importlib.util.find_spec("tensorflow") is not None:  # StringLookup needs TF
        code = (
            "import sys, json, keras\nl = keras.layers.StringLookup.from_config(json.loads(sys.argv[1]))\n"
            "print(l.get_vocabulary())\n"
        )
        done = subprocess.run([sys.executable, "-c", code, __import__("json").dumps(layer["config"])],
                              capture_output=True, text=True, timeout=300, check=False,
                              env={**os.environ, "KERAS_BACKEND": "torch"})  # fmt: skip
        assert "beta" in done.stdout, done.stderr[-3000:]  # Keras read the host file
    report = scan_one(path)
    assert report.verdict is Verdict.MALICIOUS
    (finding,) = [f for f in report.findings if f.rule == "keras.path"]
    assert finding.severity is Severity.MALICIOUS and finding.evidence == str(vocab)


@pytest.mark.parametrize(
    ("value", "severity"),
    [
        ("https://example.invalid/x.txt", Severity.MALICIOUS),
        ("../../etc/passwd", Severity.MALICIOUS),
        ("~/.ssh/id_rsa", Severity.MALICIOUS),
    ],
)
def test_paths_in_file_keys(tmp_path: Path, value: str, severity: Severity) -> None:
    layer = obj("keras.layers", "TextVectorization", {"name": "tv", "vocabulary": value})
    report = scan_one(write_keras(tmp_path / "m.keras", functional(layer)))
    (finding,) = [f for f in report.findings if f.rule == "keras.path"]
    assert finding.severity is severity


def test_paths_elsewhere_are_suspicious_and_relative_names_clean(tmp_path: Path) -> None:
    report = scan_one(write_keras(tmp_path / "m.keras", functional(dense(name="/tmp/x"))))
    assert report.verdict is Verdict.SUSPICIOUS
    assert [f.rule for f in report.findings if f.severity is not Severity.INFO] == ["keras.path"]
    assert scan_one(write_keras(tmp_path / "n.keras", functional(dense(name="block/dense")))).verdict is (
        Verdict.CLEAN
    )


def test_allow_names_a_custom_keras_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layer = obj("my_project.layers", "Fancy", {"name": "fancy"}, "my_project>Fancy")
    path = write_keras(tmp_path / "m.keras", functional(layer))
    assert main(["scan", str(path)]) == 3
    assert main(["scan", str(path), "--allow", "my_project.layers.Fanc"]) == 3  # near miss
    assert main(["scan", str(path), "--allow", "my_project.layers.Fancy"]) == 0
    out = capsys.readouterr().out
    assert "my_project.layers.Fancy" in out  # listed among the allowances in force
    policy = tmp_path / "policy.toml"
    policy.write_text('allow = ["my_project.layers.Fancy"]\n')
    assert main(["scan", str(path), "--policy", str(policy)]) == 0


def test_allow_never_clears_a_dangerous_keras_name(tmp_path: Path) -> None:
    layer = obj("keras.layers", "Dense", {"name": "d", "activation": obj("os", "function", "system")})
    path = write_keras(tmp_path / "m.keras", functional(layer))
    assert main(["scan", str(path), "--allow", "os.system"]) == 1


def test_stray_characters_do_not_hide_an_embedded_pickle(tmp_path: Path) -> None:
    """base64.b64decode (what Keras calls) drops characters outside the alphabet."""
    marker = tmp_path / "pwned"
    text = base64.b64encode(pickle.dumps(_Payload(marker), protocol=2)).decode()
    noisy = "!".join(text[i : i + 7] for i in range(0, len(text), 7))
    assert base64.b64decode(noisy) == base64.b64decode(text)
    report = scan_one(write_keras(tmp_path / "m.keras", model(torch_module_wrapper(noisy))))
    assert report.verdict is Verdict.MALICIOUS


def test_ordinary_strings_are_not_mistaken_for_embedded_files() -> None:
    """Every config string is decoded the way b64decode would; the magic/opcode checks must keep
    ordinary names from looking like files (a false nested file could turn a model into an ERROR)."""
    import random
    import string

    from airlock._formats.keras_config import _embedded

    rng = random.Random(7)  # noqa: S311 - a seeded test corpus, not a secret
    alphabet = string.ascii_letters + string.digits + "_"
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(16, 48)))
        assert _embedded(text) is None, text


def test_protocol_0_inst_payload_is_found(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = f"(S'touch {marker}'\nios\nsystem\n.".encode()
    report = scan_one(
        write_keras(tmp_path / "m.keras", model(torch_module_wrapper(base64.b64encode(raw).decode())))
    )
    assert report.verdict is Verdict.MALICIOUS


def _headerless_payloads(marker: Path) -> dict[str, bytes]:
    """Pickles that ``pickle.load`` runs but that carry no PROTO 2-5 header, no leading GLOBAL
    line and no STOP at the very end (torch's legacy reader ignores what follows the pickles)."""
    cmd = f"touch {marker}".encode()
    return {
        "proto-1": b"\x80\x01cposix\nsystem\nq\x00X" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R.",
        "protocol-4-no-proto": b"\x8c\x05posix\x8c\x06system\x93\x8c" + bytes([len(cmd)]) + cmd + b"\x85R.",
        "none-pop-first": b"N0cposix\nsystem\n(S'" + cmd + b"'\ntR.",
        "trailing-bytes": b"(S'" + cmd + b"'\niposix\nsystem\n." + b"\x00not a pickle",
    }


@pytest.mark.parametrize("variant", ["proto-1", "protocol-4-no-proto", "none-pop-first", "trailing-bytes"])
def test_torch_module_wrapper_bytes_are_read_as_torch_load_reads_them(tmp_path: Path, variant: str) -> None:
    """TorchModuleWrapper.from_config runs ``torch.load(BytesIO(b64decode(module)), weights_only=False)``:
    bytes that are not a zip are unpickled from the first byte, whatever opcode is there. Guessing
    "is this a pickle" from a header missed these (the model was CLEAN, exit 0)."""
    marker = tmp_path / "pwned"
    text = base64.b64encode(_headerless_payloads(marker)[variant]).decode()
    path = write_keras(tmp_path / "m.keras", model(torch_module_wrapper(text)))
    if HAVE_KERAS:
        done = _keras_load(path)
    else:  # the exact call Keras makes, in a throwaway process
        code = (
            "import base64, io, sys, torch\n"
            "torch.load(io.BytesIO(base64.b64decode(sys.argv[1].encode('ascii'))), weights_only=False)\n"
        )
        done = subprocess.run([sys.executable, "-c", code, text], capture_output=True, text=True,
                              timeout=300, check=False)  # fmt: skip
    assert marker.exists(), done.stderr[-3000:]
    marker.unlink()
    report = scan_one(path)
    assert report.verdict is Verdict.MALICIOUS, report
    hits = [f for f in report.findings if f.severity is Severity.MALICIOUS]
    assert {f.callable for f in hits} & {"os.system", "posix.system"}, hits
    assert any(
        "TorchModuleWrapper" in m and m.endswith("module (base64)") for f in hits for m in f.location.members
    )
    assert not marker.exists()


@pytest.mark.parametrize("name", ["m.keras", "m.zip"])
def test_a_reordered_archive_with_escaped_keys_is_read_as_keras_reads_it(tmp_path: Path, name: str) -> None:
    """Keras opens ``config.json`` by name whatever the member order; JSON escapes (``\\u0063lass_name``)
    decode to the same keys. With the weights first and escaped keys, the archive went to the
    generic zip reader, whose members are sniffed by their first bytes: config.json was "not a
    model file" and the embedded pickle ran under Keras while the scan said CLEAN, exit 0."""
    marker = tmp_path / "pwned"
    raw = pickle.dumps(_Payload(marker), protocol=2)
    config = json.dumps(model(torch_module_wrapper(base64.b64encode(raw).decode())))
    escaped = config.replace('"class_name"', '"\\u0063lass_name"').replace('"config"', '"\\u0063onfig"')
    assert json.loads(escaped) == json.loads(config)
    path = write_keras(tmp_path / name, {}, first="model.weights.h5")
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["config.json"] = escaped.encode()
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    if HAVE_KERAS:
        keras_path = path if name.endswith(".keras") else path.rename(path.with_suffix(".keras"))
        done = _keras_load(keras_path)
        assert marker.exists(), done.stderr[-3000:]
        marker.unlink()
        if keras_path != path:
            keras_path.rename(path)
    report = scan_one(path)
    assert report.verdict is Verdict.MALICIOUS, report
    hits = [f for f in report.findings if f.severity is Severity.MALICIOUS]
    assert {f.callable for f in hits} & {"os.system", "posix.system"}, hits
    assert not marker.exists()


def test_a_zipped_hugging_face_folder_is_not_taken_for_keras(tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
        zf.writestr("README.md", "# model\n")
    report = scan_one(path)
    assert report.verdict is Verdict.CLEAN, report
