"""TensorFlow SavedModel: ops that run Python, touch files or the network are named; ordinary graphs are clean."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock import Verdict
from airlock._formats.onnx import OnnxReader
from airlock._formats.savedmodel import SavedModelReader
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS
from airlock.results import FileReport, Severity
from tests.formats_ml.helpers import assert_clean, only, read_all, rules, scan_one
from tests.formats_ml.tfgen import function, node, ordinary, saved_model

READER = SavedModelReader()


def _scan(tmp_path: Path, data: bytes) -> FileReport:
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "saved_model.pb"
    path.write_bytes(data)
    return scan_one(path)


def test_ordinary_graph_is_clean(tmp_path: Path) -> None:
    report = _scan(tmp_path, saved_model(*ordinary()))
    assert report.format == "tf-savedmodel"
    assert_clean(report)


def test_sniff_wins_over_onnx_and_onnx_still_rejects_it() -> None:
    data = saved_model(*ordinary())
    assert READER.sniff(data[:4096], len(data))
    with pytest.raises(FormatError, match="no graph"):
        read_all(OnnxReader(), data, Path("/x/saved_model.pb"))


@pytest.mark.parametrize(
    ("op", "rule", "severity"),
    [
        ("PyFunc", "savedmodel.python-op", Severity.MALICIOUS),
        ("EagerPyFunc", "savedmodel.python-op", Severity.MALICIOUS),
        ("WriteFile", "savedmodel.file-op", Severity.MALICIOUS),
        ("RpcClient", "savedmodel.network-op", Severity.MALICIOUS),
        ("ReadFile", "savedmodel.file-op", Severity.MALICIOUS),
        ("MatchingFiles", "savedmodel.file-op", Severity.MALICIOUS),
        ("ImmutableConst", "savedmodel.file-op", Severity.MALICIOUS),
        ("DebugIdentityV2", "savedmodel.debug-op", Severity.MALICIOUS),
        ("TFRecordDataset", "savedmodel.file-op", Severity.MALICIOUS),
        ("Restore", "savedmodel.file-op", Severity.MALICIOUS),
        ("WriteSummary", "savedmodel.file-op", Severity.MALICIOUS),
        ("SqlDataset", "savedmodel.file-op", Severity.MALICIOUS),
        ("Recv", "savedmodel.network-op", Severity.MALICIOUS),
        ("Save", "savedmodel.file-op", Severity.MALICIOUS),
        ("MyCustomOp", "savedmodel.unknown-op", Severity.SUSPICIOUS),
        ("ReadFileX", "savedmodel.unknown-op", Severity.SUSPICIOUS),
    ],
)
def test_risky_op_is_named_with_its_node(tmp_path: Path, op: str, rule: str, severity: Severity) -> None:
    report = _scan(tmp_path, saved_model(*ordinary(), node("payload/step", op)))
    assert report.verdict is severity.verdict
    finding = only(report, rule)
    assert finding.severity is severity
    assert finding.callable == op and finding.evidence == "payload/step"
    assert f"'payload/step' in graph is a '{op}' op" in finding.message


def test_op_inside_a_library_function_is_found(tmp_path: Path) -> None:
    fn = function(
        "__inference_serve_42", node("Const", "Const"), node("leak", "ReadFile"), node("py", "PyFunc")
    )
    report = _scan(
        tmp_path, saved_model(*ordinary(), node("call", "StatefulPartitionedCall"), functions=(fn,))
    )
    assert report.verdict is Verdict.MALICIOUS
    assert {"savedmodel.python-op", "savedmodel.file-op"} <= rules(report)
    assert "function '__inference_serve_42'" in only(report, "savedmodel.python-op").message


def test_print_to_a_file_stream_is_malicious(tmp_path: Path) -> None:
    report = _scan(tmp_path, saved_model(node("p", "PrintV2", {"output_stream": "file:///home/u/.bashrc"})))
    finding = only(report, "savedmodel.file-op")
    assert finding.severity is Severity.MALICIOUS
    assert "file:///home/u/.bashrc" in finding.message


def test_truncated_saved_model_is_an_error(tmp_path: Path) -> None:
    data = saved_model(*ordinary(), node("leak", "ReadFile"))
    report = _scan(tmp_path, data[:-5])
    assert report.verdict is Verdict.ERROR
    assert report.format == "tf-savedmodel"


def test_wrong_schema_version_is_an_error(tmp_path: Path) -> None:
    data = bytearray(saved_model(*ordinary()))
    data[1] = 2
    with pytest.raises(FormatError, match=r"schema_version is 2 \(expected 1\)"):
        read_all(READER, bytes(data), tmp_path / "saved_model.pb")


def test_depth_limit(tmp_path: Path) -> None:
    data = saved_model(*ordinary())
    with pytest.raises(LimitError, match="max_protobuf_depth"):
        read_all(READER, data, tmp_path / "s.pb", limits=DEFAULT_LIMITS.replace(max_protobuf_depth=2))


_SEEDS = [saved_model(*ordinary(), functions=(function("f", node("r", "ReadFile")),))]


@settings(max_examples=300, deadline=None)
@given(
    seed=st.sampled_from(_SEEDS),
    cut=st.integers(1, 10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
)
def test_mangled_saved_models_only_raise_format_errors(
    seed: bytes, cut: int, flips: list[tuple[int, int]]
) -> None:
    raw = bytearray(seed[: min(cut, len(seed))])
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    with contextlib.suppress(FormatError):
        read_all(READER, bytes(raw), Path("/x/saved_model.pb"))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, len(_SEEDS[0]) - 1))
def test_every_truncation_is_an_error(cut: int) -> None:
    with pytest.raises(FormatError):
        read_all(READER, _SEEDS[0][:cut], Path("/x/saved_model.pb"))


def test_ordinary_ops_and_library_function_calls_are_clean(tmp_path: Path) -> None:
    from airlock._analysis.tf_ops import ORDINARY_OPS

    fn = function("__inference_call_7", node("a", "Relu"), node("b", "Softmax"), node("c", "ReadVariableOp"))
    nodes = [node(f"n{i}", op) for i, op in enumerate(sorted(ORDINARY_OPS - {"PrintV2"}))]
    data = saved_model(*ordinary(), *nodes, node("call", "__inference_call_7"), functions=(fn,))
    assert_clean(_scan(tmp_path, data))


def test_allow_names_a_tensorflow_op(tmp_path: Path) -> None:
    from airlock._cli import main

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(saved_model(*ordinary(), node("x", "MyCustomOp")))
    assert main(["scan", str(folder)]) == 3
    assert main(["scan", str(folder), "--allow", "tf.MyCustomOp"]) == 0
    assert main(["scan", str(folder), "--allow", "tf.MyCustomOpp"]) == 3
    (folder / "saved_model.pb").write_bytes(saved_model(*ordinary(), node("x", "WriteFile")))
    assert main(["scan", str(folder), "--allow", "tf.WriteFile"]) == 1
