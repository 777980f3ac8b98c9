"""A valid ONNX model whose top-level fields come in another order is sniffed and analysed.

Protobuf parsers (``onnx.load``, onnxruntime) accept fields in any order; writers use number
order. Each reordered file is first loaded and run with the real loaders in a throwaway process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import airlock
from airlock import Verdict
from airlock._formats import protobuf as pb
from airlock._formats.onnx import OnnxReader, looks_like_onnx
from airlock.sandbox._detect import detect_runtime
from tests.formats_ml.onnxgen import save_external, set_location, simple_model

_RUN = (
    "import sys, numpy as np, onnx, onnxruntime as ort\n"
    "model = onnx.load(sys.argv[1], load_external_data=False)\n"
    "onnx.checker.check_model(model)\n"
    "session = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
    "print(session.run(None, {'x': np.ones(16, dtype=np.float32)})[0][:3])\n"
)

ORDERS = {
    "reversed": lambda numbers: sorted(numbers, reverse=True),
    "graph-first": lambda numbers: sorted(numbers, key=lambda n: (n != 7, n)),
    "opset-first": lambda numbers: sorted(numbers, key=lambda n: (n != 8, n)),
    "producer-first": lambda numbers: sorted(numbers, key=lambda n: (n != 2, n)),
}


def reorder(data: bytes, order: str) -> bytes:
    fields = list(pb.iter_fields(data, 0, len(data)))
    numbers = ORDERS[order](sorted({f.number for f in fields}))
    return b"".join(data[f.offset : f.end] for n in numbers for f in fields if f.number == n)


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_reordered_model_runs_and_is_analysed(tmp_path: Path, order: str) -> None:
    model = simple_model()
    model.ir_version = 10  # what the installed onnxruntime runs
    model.graph.doc_string = "d" * 6000  # the first field may run past the sniffed head
    raw = reorder(model.SerializeToString(), order)
    assert raw != model.SerializeToString()
    path = tmp_path / "weights.dat"  # no model suffix: found by content only
    path.write_bytes(raw)
    subprocess.run([sys.executable, "-c", _RUN, str(path)], check=True, timeout=120, capture_output=True)
    assert OnnxReader().sniff(raw[:4096], len(raw))
    report = airlock.scan(tmp_path)
    (only,) = report.files
    assert only.format == "onnx"
    assert only.verdict is Verdict.CLEAN, only


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_reordered_model_with_traversal_is_malicious_in_a_folder(tmp_path: Path, order: str) -> None:
    folder = tmp_path / "model"
    path = save_external(simple_model(), folder)
    set_location(path, "../../outside.bin")
    original = airlock.scan(path).files[0]
    renamed = folder / "blob"
    renamed.write_bytes(reorder(path.read_bytes(), order))
    path.unlink()
    report = airlock.scan(folder)
    (scanned,) = [f for f in report.files if Path(f.path).name == "blob"]
    assert scanned.verdict is Verdict.MALICIOUS
    assert {f.rule for f in scanned.findings} == {f.rule for f in original.findings}


def test_runtime_detection_uses_the_same_sniff(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(reorder(simple_model().SerializeToString(), "reversed"))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert detect_runtime(fd) == "onnx"
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "head",
    [
        b"(dp0\nS'a'\np1\nI1\ns.",  # a protocol-0 pickle: '(' is ModelProto field 5's tag
        b"(lp0\nI1\naI2\na.",
        b"(cos\nsystem\n(S'id'\ntR.",
        b"2024-01-01 12:00:00 log line\n" * 4,
        b'"quoted text" and more text here',
        b"Bonjour",
        b":\x05hello",  # a 'graph' that does not start with a GraphProto field
        b"\x12\x03\xff\xfe\xfd\x08\x07",  # producer_name that is not UTF-8
    ],
)
def test_other_content_is_not_onnx(head: bytes) -> None:
    assert not looks_like_onnx(head, len(head))


def test_sniff_accepts_every_real_model_prefix() -> None:
    data = simple_model().SerializeToString()
    assert onnx.load_from_string(data).graph.name == "g"
    for cut in range(16, len(data) + 1, 7):
        assert looks_like_onnx(data[:cut], len(data)), cut


def _unknown(number: int, payload: bytes) -> bytes:
    return pb_encode_tag(number, 2) + pb_encode_varint(len(payload)) + payload


def pb_encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def pb_encode_tag(number: int, wire: int) -> bytes:
    return pb_encode_varint(number << 3 | wire)


@pytest.mark.parametrize("number", [9, 15, 99, 1000])
def test_unknown_fields_after_a_model_field_are_still_onnx(tmp_path: Path, number: int) -> None:
    # protobuf keeps fields it does not know; onnx.load and onnxruntime load such a model
    model = simple_model()
    model.ir_version = 10
    data = reorder(model.SerializeToString(), "reversed")
    first = next(iter(pb.iter_fields(data, 0, len(data))))
    raw = data[: first.end] + _unknown(number, b"\x00junk" * 50) + data[first.end :]
    path = tmp_path / "weights.dat"
    path.write_bytes(raw)
    subprocess.run([sys.executable, "-c", _RUN, str(path)], check=True, timeout=120, capture_output=True)
    report = airlock.scan(tmp_path)
    (only,) = report.files
    assert only.format == "onnx"
    assert only.verdict is Verdict.CLEAN, only
