"""ONNX: external-data traversal in every published form, custom domains, functions, nesting."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
from onnx import helper

from airlock import Verdict
from airlock._formats.onnx import OnnxReader, location_problem
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Severity
from tests.formats_ml.helpers import assert_clean, issues, only, read_all, rules, scan_one
from tests.formats_ml.onnxgen import nested_if, save_external, set_location, simple_model, tensor

READER = OnnxReader()


def _write(path: Path, model: onnx.ModelProto) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _external_tensor(location: str) -> onnx.TensorProto:
    t = tensor("c")
    t.ClearField("float_data")
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return t


# ---- ordinary models -------------------------------------------------------------------------


def test_plain_model_is_clean_and_sniffed(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.onnx", simple_model())
    report = scan_one(path)
    assert report.format == "onnx"
    assert_clean(report)


def test_model_with_external_data_is_clean(tmp_path: Path) -> None:
    path = save_external(simple_model(), tmp_path / "model")
    assert (tmp_path / "model" / "weights.bin").stat().st_size == 64
    report = scan_one(path)
    assert report.format == "onnx"
    assert_clean(report)


def test_external_data_in_a_subfolder_is_clean(tmp_path: Path) -> None:
    path = save_external(simple_model(), tmp_path / "model", location="data/weights.bin")
    assert_clean(scan_one(path))


def test_hard_link_with_every_name_inside_the_folder_is_clean(tmp_path: Path) -> None:
    path = save_external(simple_model(), tmp_path / "model")
    os.link(tmp_path / "model" / "weights.bin", tmp_path / "model" / "copy.bin")
    assert_clean(scan_one(path))


def test_com_microsoft_contrib_ops_are_clean(tmp_path: Path) -> None:
    node = helper.make_node("FusedMatMul", ["y", "y"], ["z"], name="fmm", domain="com.microsoft")
    model = simple_model([node], domains=("com.microsoft",))
    assert_clean(scan_one(_write(tmp_path / "m.onnx", model)))


# ---- CVE-2022-25882 / CVE-2024-27318 and their follow-ups: each traversal form ------------------


@pytest.mark.parametrize(
    "location",
    [
        "../outside.bin",
        "sub/../../outside.bin",
        "/etc/passwd",
        "..\\..\\outside.bin",
        "C:/Windows/win.ini",
        "w.bin\x00/../x",
    ],
)
def test_traversal_locations_are_malicious_and_named(tmp_path: Path, location: str) -> None:
    path = save_external(simple_model(), tmp_path / "model")
    set_location(path, location)
    report = scan_one(path)
    assert report.verdict is Verdict.MALICIOUS
    finding = only(report, "onnx.external-data-traversal")
    assert finding.evidence == location
    assert repr(location) in finding.message


def test_symlink_out_of_the_folder_is_malicious(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s" * 64)
    path = save_external(simple_model(), tmp_path / "model")
    data = tmp_path / "model" / "weights.bin"
    data.unlink()
    data.symlink_to(secret)
    report = scan_one(path)
    assert report.verdict is Verdict.MALICIOUS
    finding = only(report, "onnx.external-data-symlink")
    assert "'weights.bin'" in finding.message and str(secret) in finding.message


def test_symlinked_folder_component_out_is_malicious(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "weights.bin").write_bytes(b"s" * 64)
    path = save_external(simple_model(), tmp_path / "model", location="sub/weights.bin")
    (tmp_path / "model" / "sub" / "weights.bin").unlink()
    (tmp_path / "model" / "sub").rmdir()
    (tmp_path / "model" / "sub").symlink_to(tmp_path / "elsewhere")
    report = scan_one(path)
    assert only(report, "onnx.external-data-symlink").severity is Severity.MALICIOUS


def test_symlink_inside_the_folder_is_clean(tmp_path: Path) -> None:
    path = save_external(simple_model(), tmp_path / "model")
    os.rename(tmp_path / "model" / "weights.bin", tmp_path / "model" / "real.bin")
    (tmp_path / "model" / "weights.bin").symlink_to("real.bin")
    assert_clean(scan_one(path))


def test_hard_link_to_a_file_outside_is_malicious(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s" * 64)
    path = save_external(simple_model(), tmp_path / "model")
    data = tmp_path / "model" / "weights.bin"
    data.unlink()
    os.link(secret, data)
    report = scan_one(path)
    assert report.verdict is Verdict.MALICIOUS
    finding = only(report, "onnx.external-data-hardlink")
    assert "'weights.bin'" in finding.message and "2 names, only 1" in finding.message


def test_traversal_in_a_nested_if_branch_is_found(tmp_path: Path) -> None:
    model = nested_if(3, _external_tensor("../../etc/shadow"))
    report = scan_one(_write(tmp_path / "m.onnx", model))
    finding = only(report, "onnx.external-data-traversal")
    assert finding.evidence == "../../etc/shadow"
    assert "if0" in finding.message


def test_traversal_in_a_function_body_attribute_is_found(tmp_path: Path) -> None:
    const = helper.make_node("Constant", [], ["c"], name="k", value=_external_tensor("/etc/passwd"))
    fn = helper.make_function("custom.fn", "F", ["a"], ["b"], [const], [helper.make_opsetid("", 17)])
    call = helper.make_node("F", ["y"], ["z"], name="call", domain="custom.fn")
    model = simple_model([call], functions=[fn], domains=("custom.fn",))
    report = scan_one(_write(tmp_path / "m.onnx", model))
    assert report.verdict is Verdict.MALICIOUS
    assert {"onnx.external-data-traversal", "onnx.function"} <= rules(report)
    # the call to the local function is reported through the function, not as a custom op
    assert "onnx.custom-domain" not in rules(report)


# ---- other external-data problems --------------------------------------------------------------


def test_missing_external_file_is_an_error(tmp_path: Path) -> None:
    path = save_external(simple_model(), tmp_path / "model")
    set_location(path, "nothere.bin")
    report = scan_one(path)
    assert report.verdict is Verdict.ERROR
    assert "'nothere.bin'" in only(report, "onnx.external-data-missing").message


@pytest.mark.parametrize(("offset", "length"), [("0", "65"), ("65", None), ("60", "8")])
def test_offset_or_length_past_the_file_is_an_error(tmp_path: Path, offset: str, length: str | None) -> None:
    path = save_external(simple_model(), tmp_path / "model")
    set_location(path, "weights.bin", offset=offset, length=length)
    report = scan_one(path)
    assert report.verdict is Verdict.ERROR
    assert "beyond its size 64" in only(report, "onnx.external-data-bounds").message


def test_non_decimal_offset_is_an_error(tmp_path: Path) -> None:
    path = save_external(simple_model(), tmp_path / "model")
    set_location(path, "weights.bin", offset="+1_0")
    assert "not a plain decimal" in only(scan_one(path), "onnx.external-data-field").message


def test_inside_an_archive_external_data_is_unverifiable(tmp_path: Path) -> None:
    data = simple_model().SerializeToString()
    path = save_external(simple_model(), tmp_path / "model")
    facts = issues(read_all(READER, path.read_bytes(), path, on_disk=False))
    assert [i.rule for i in facts] == ["onnx.external-data-unverifiable"]
    assert facts[0].severity is Severity.SUSPICIOUS
    assert issues(read_all(READER, data, path, on_disk=False)) == []


def test_location_problem_accepts_plain_relative_paths() -> None:
    assert location_problem("weights.bin") is None
    assert location_problem("sub/dir/w.bin") is None
    assert location_problem("./w.bin") is None
    assert location_problem("..w.bin") is None
    assert location_problem(".. ./x") is not None
    assert location_problem("...") is not None


# ---- custom domains, functions ----------------------------------------------------------------


def test_custom_domain_is_suspicious_and_named(tmp_path: Path) -> None:
    node = helper.make_node("MyOp", ["y"], ["z"], name="mine", domain="evil.ops")
    model = simple_model([node], domains=("evil.ops",))
    report = scan_one(_write(tmp_path / "m.onnx", model))
    assert report.verdict is Verdict.SUSPICIOUS
    finding = only(report, "onnx.custom-domain")
    assert finding.callable == "evil.ops::MyOp"
    assert "'mine'" in finding.message


def test_function_is_suspicious_and_named(tmp_path: Path) -> None:
    body = [helper.make_node("Relu", ["a"], ["b"])]
    fn = helper.make_function("local", "MyRelu", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    call = helper.make_node("MyRelu", ["y"], ["z"], name="call", domain="local")
    model = simple_model([call], functions=[fn], domains=("local",))
    report = scan_one(_write(tmp_path / "m.onnx", model))
    assert report.verdict is Verdict.SUSPICIOUS
    assert only(report, "onnx.function").callable == "local::MyRelu"
    assert rules(report) == {"onnx.function"}


# ---- structure and limits ------------------------------------------------------------------------


def test_nesting_past_the_depth_limit_is_a_limit_error(tmp_path: Path) -> None:
    data = nested_if(12, tensor("c")).SerializeToString()
    read_all(READER, data, tmp_path / "m.onnx")  # within the default limit
    with pytest.raises(LimitError, match=r"nest deeper than 20 levels .*max_protobuf_depth"):
        read_all(READER, data, tmp_path / "m.onnx", limits=DEFAULT_LIMITS.replace(max_protobuf_depth=20))


def test_truncated_model_is_an_error(tmp_path: Path) -> None:
    data = simple_model().SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[: len(data) - 3])
    report = scan_one(path)
    assert report.verdict is Verdict.ERROR
    assert report.format == "onnx"


def test_model_without_opset_import_is_an_error(tmp_path: Path) -> None:
    model = simple_model()
    del model.opset_import[:]
    with pytest.raises(FormatError, match=r"no opset_import \(field 8\)"):
        read_all(READER, model.SerializeToString(), tmp_path / "m.onnx")


def test_sniff_rejects_other_content() -> None:
    assert READER.sniff(simple_model().SerializeToString()[:4096], 10_000)
    assert not READER.sniff(b"\x80\x02}q\x00.", 6)  # a pickle
    assert not READER.sniff(b"\x08\x01", 2)  # one field only
    assert not READER.sniff(b"\x08\x01\x0a\x02hi", 6)  # field 1 as length-delimited: not a ModelProto
    assert not READER.sniff(b"PK\x03\x04" + b"\x00" * 40, 44)


def test_sniff_accepts_a_graph_larger_than_the_head() -> None:
    model = simple_model()
    model.graph.doc_string = "d" * 10_000
    data = model.SerializeToString()
    assert READER.sniff(data[:4096], len(data))
    # cut short, it is still claimed as ONNX, so that the read reports where it breaks
    assert READER.sniff(data[:4096], 4096)
    with pytest.raises(FormatError, match=r"field 7 at offset \d+ declares \d+ bytes but only \d+ remain"):
        read_all(READER, data[:4096], Path("m.onnx"))
