"""Keras: CVE-2024-3660 (Lambda bytecode), CVE-2025-1550 (config naming any function) and its
bypasses, custom objects, legacy HDF5, and ordinary models that must stay clean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airlock import Verdict
from airlock._formats.base import Issue, Nested
from airlock._formats.keras import KerasConfigReader, KerasH5Reader, KerasZipReader
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.results import Severity
from tests.formats_ml.helpers import assert_clean, issues, only, read_all, rules, scan_one
from tests.formats_ml.kerasgen import (
    dense,
    functional,
    lambda_layer_legacy,
    lambda_layer_v3,
    legacy_sequential,
    obj,
    write_h5,
    write_keras,
)

# ---- ordinary models -------------------------------------------------------------------------


def test_builtin_layers_only_is_clean(tmp_path: Path) -> None:
    report = scan_one(write_keras(tmp_path / "m.keras", functional(dense("a"), dense("b", "softmax"))))
    assert report.format == "keras"
    assert_clean(report)


def test_keras_hub_objects_are_clean(tmp_path: Path) -> None:
    backbone = obj(
        "keras_hub.src.models.gemma.gemma_backbone",
        "GemmaBackbone",
        {"name": "gemma"},
        "keras_hub>GemmaBackbone",
    )
    assert_clean(scan_one(write_keras(tmp_path / "m.keras", functional(backbone))))


def test_legacy_h5_with_builtin_layers_is_clean(tmp_path: Path) -> None:
    report = scan_one(write_h5(tmp_path / "m.h5", legacy_sequential()))
    assert report.format == "keras-h5"
    assert_clean(report)


def test_h5_weights_only_is_clean(tmp_path: Path) -> None:
    assert_clean(scan_one(write_h5(tmp_path / "w.h5", None, weights_only=True)))


def test_bare_config_json_is_read(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(functional()))
    report = scan_one(path)
    assert report.format == "keras-config"
    assert_clean(report)


# ---- CVE-2024-3660: Lambda layers carrying bytecode --------------------------------------------


def test_cve_2024_3660_lambda_in_keras_v3_is_malicious(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    report = scan_one(write_keras(tmp_path / "m.keras", functional(lambda_layer_v3(marker))))
    assert report.verdict is Verdict.MALICIOUS
    finding = only(report, "keras.lambda")
    assert "CVE-2024-3660" in finding.message
    # the payload is named from the strings in the bytecode, which is never unmarshalled
    assert "__import__" in finding.message and "touch" in finding.message and str(marker) in finding.message
    assert "keras.serialized-function" not in rules(report)  # reported once, as the Lambda
    assert not marker.exists()


def test_cve_2024_3660_lambda_in_legacy_h5_is_malicious(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    report = scan_one(write_h5(tmp_path / "m.h5", legacy_sequential(lambda_layer_legacy(marker))))
    assert report.verdict is Verdict.MALICIOUS
    assert str(marker) in only(report, "keras.lambda").message
    assert not marker.exists()


def test_bytecode_anywhere_in_the_config_is_malicious(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    layer = lambda_layer_v3(marker)
    hidden = dense(activation=layer["config"]["function"])  # a __lambda__ object as an activation
    report = scan_one(write_keras(tmp_path / "m.keras", functional(hidden)))
    finding = only(report, "keras.serialized-function")
    assert finding.severity is Severity.MALICIOUS and "touch" in finding.message


def test_lambda_calling_a_named_function_is_suspicious(tmp_path: Path) -> None:
    fn = obj("keras.ops", "function", "relu", "relu")
    layer = obj("keras.layers", "Lambda", {"name": "lam", "function": fn})
    report = scan_one(write_keras(tmp_path / "m.keras", functional(layer)))
    assert report.verdict is Verdict.SUSPICIOUS
    assert only(report, "keras.lambda").severity is Severity.SUSPICIOUS


# ---- CVE-2025-1550: config naming arbitrary modules and functions, and the fix's bypasses --------


@pytest.mark.parametrize(
    ("layer", "named"),
    [
        (obj("os", "system", {"command": "touch /tmp/airlock-never"}), "os.system"),
        (dense(activation=obj("builtins", "function", "exec", "exec")), "builtins.exec"),
        (
            dense(activation=obj("subprocess", "function", "check_output", "check_output")),
            "subprocess.check_output",
        ),
        # bypasses of the 3.9 fix: side-effecting functions inside Keras' own package
        (
            obj("keras.utils", "get_file", {"origin": "http://127.0.0.1:9/x", "cache_dir": "/tmp"}),
            "keras.utils.get_file",
        ),
        (
            dense(activation=obj("keras.config", "function", "enable_unsafe_deserialization")),
            "keras.config.enable_unsafe_deserialization",
        ),
    ],
)
def test_cve_2025_1550_config_naming_a_dangerous_callable_is_malicious(
    tmp_path: Path, layer: dict[str, Any], named: str
) -> None:
    report = scan_one(write_keras(tmp_path / "m.keras", functional(layer)))
    assert report.verdict is Verdict.MALICIOUS
    finding = only(report, "keras.unsafe-module")
    assert finding.callable == named
    assert repr(named) in finding.message


def test_custom_module_is_suspicious(tmp_path: Path) -> None:
    layer = obj("my_project.layers", "Fancy", {"name": "fancy"}, "my_project>Fancy")
    report = scan_one(write_keras(tmp_path / "m.keras", functional(layer)))
    assert report.verdict is Verdict.SUSPICIOUS
    assert only(report, "keras.custom-object").callable == "my_project.layers.Fancy"


def test_unknown_legacy_class_is_suspicious(tmp_path: Path) -> None:
    report = scan_one(write_h5(tmp_path / "m.h5", legacy_sequential({"class_name": "MyLayer", "config": {}})))
    assert report.verdict is Verdict.SUSPICIOUS
    assert "'MyLayer'" in only(report, "keras.custom-object").message


def test_legacy_builtins_activation_name_is_clean_but_python_builtin_is_not(tmp_path: Path) -> None:
    ok = dense(activation=obj("builtins", "function", "relu", "relu"))
    assert_clean(scan_one(write_keras(tmp_path / "a.keras", functional(ok))))
    bad = dense(activation=obj("builtins", "function", "print", "print"))
    report = scan_one(write_keras(tmp_path / "b.keras", functional(bad)))
    assert only(report, "keras.custom-object").callable == "builtins.print"


# ---- archive layout --------------------------------------------------------------------------


def test_reordered_archive_config_is_still_analysed(tmp_path: Path) -> None:
    # Keras reads members by name; an archive whose first member is not Keras' usual one is not
    # sniffed as .keras, but its config.json is a Keras config by content wherever it is scanned.
    path = write_keras(
        tmp_path / "m.keras", functional(lambda_layer_v3(tmp_path / "x")), first="model.weights.h5"
    )
    head = path.read_bytes()[:4096]
    assert not KerasZipReader().sniff(head, len(head))
    config = json.dumps(functional(lambda_layer_v3(tmp_path / "x"))).encode()
    assert KerasConfigReader().sniff(config[:4096], len(config))
    found = issues(read_all(KerasConfigReader(), config, tmp_path / "config.json"))
    assert [i.rule for i in found] == ["keras.lambda"]
    # end to end: the generic zip reader hands config.json over, and it is found there
    report = scan_one(path)
    assert report.verdict is Verdict.MALICIOUS
    # read as Keras reads it (config.json by name), so located like an archive in Keras' order
    assert only(report, "keras.lambda").location.members == ()


def test_other_members_are_scanned_as_files(tmp_path: Path) -> None:
    # Keras loads model.weights.npz with numpy's allow_pickle=True: extra members are scanned
    path = write_keras(
        tmp_path / "m.keras", functional(), extra={"model.weights.npz": b"PK\x05\x06" + b"\x00" * 18}
    )
    facts = read_all(KerasZipReader(), path.read_bytes(), path)
    assert [f.name for f in facts if isinstance(f, Nested)] == ["model.weights.npz"]


def test_archive_without_config_is_an_error(tmp_path: Path) -> None:
    path = write_keras(tmp_path / "m.keras", functional())
    raw = path.read_bytes().replace(b"config.json", b"configX.jsn")
    with pytest.raises(FormatError, match=r"has no config\.json"):
        read_all(KerasZipReader(), raw, path)


def test_config_that_is_not_json_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="config is not valid JSON"):
        read_all(KerasConfigReader(), b'{"class_name": "X", "config": {', tmp_path / "c.json")


def test_deeply_nested_config_is_a_limit_or_format_error(tmp_path: Path) -> None:
    raw = b'{"class_name": "X", "config": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(FormatError, match="nests deeper"):
        read_all(KerasConfigReader(), raw, tmp_path / "c.json")


# ---- legacy HDF5 without h5py ------------------------------------------------------------------


def test_h5_without_h5py_is_an_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_h5(tmp_path / "m.h5", legacy_sequential())
    monkeypatch.setitem(sys.modules, "h5py", None)
    report = scan_one(path)
    assert report.verdict is Verdict.ERROR
    assert "install model-airlock[keras-h5]" in only(report, "keras.h5-unsupported").message


def test_h5_that_is_not_keras_is_an_error(tmp_path: Path) -> None:
    report = scan_one(write_h5(tmp_path / "d.h5", None))
    assert report.verdict is Verdict.ERROR
    assert "keras.h5-unknown" in rules(report)


def test_truncated_h5_is_an_error(tmp_path: Path) -> None:
    path = write_h5(tmp_path / "m.h5", legacy_sequential())
    path.write_bytes(path.read_bytes()[:600])
    report = scan_one(path)
    assert report.verdict is Verdict.ERROR
    assert report.format == "keras-h5"


def test_h5_reader_sniffs_by_signature() -> None:
    reader = KerasH5Reader()
    assert reader.sniff(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, 108)
    assert reader.sniff(b"\x00" * 512 + b"\x89HDF\r\n\x1a\n", 520)
    assert not reader.sniff(b"\x00" * 100 + b"\x89HDF\r\n\x1a\n", 108)


def test_libhdf5_never_runs_in_the_scanning_process(tmp_path: Path) -> None:
    """The trust boundary: h5py (libhdf5) is imported by the sandboxed job, not by the scanner."""
    path = write_h5(tmp_path / "m.h5", legacy_sequential())
    code = (
        "import sys, airlock\n"
        f"report = airlock.scan({str(path)!r})\n"
        "print(report.verdict.value, 'h5py' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.split() == ["CLEAN", "False"]


# ---- the HDF5 job's answer is hostile (outside review 11) ----------------------------------------
# libhdf5 runs on the file's bytes in the job; a file that exploits it controls what the job
# answers. An exploit is stood in for by a torch payload that speaks the frame protocol itself
# (tests/sandbox/test_host_side.py): everything on the scanner's side -- Worker, channel, frame
# cap, reader -- is the real code.


def _exploited(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str) -> dict[str, Any]:
    from airlock import sandbox
    from tests.sandbox.test_host_side import hostile

    model = hostile(tmp_path / "exploit.pt", source)
    real = sandbox.Worker
    seen: dict[str, Any] = {}

    def exploited(path: str, runtime: str | None = None, **kwargs: Any) -> Any:
        assert runtime == "hdf5-attributes"
        seen.update(kwargs)
        return real(model, runtime="torch", **kwargs)

    monkeypatch.setattr(sandbox, "Worker", exploited)
    return seen


def _answer(specs: str, payload: str, pad: int = 0) -> str:
    return (
        "S.sendall(LOADED)\n"
        f"raw = json.dumps({{'type': 'tensors', 'tensors': {specs}}}).encode()\n"
        f"raw = raw + b' ' * max(0, {pad} - len(raw))\n"
        f"body = {payload}\n"
        "S.sendall(struct.pack('<4sIQ', b'ALF1', len(raw), len(body)) + raw + body)\n"
        "time.sleep(30)"
    )


def _h5_read(path: Path, limits: Limits = DEFAULT_LIMITS) -> list[Issue]:
    return issues(read_all(KerasH5Reader(), path.read_bytes(), path, limits=limits))


@pytest.mark.parametrize(
    ("specs", "payload", "message"),
    [
        # int() of a 5000-digit byte string raised ValueError out of the scan (a traceback)
        ("[{'name': 'keras_layout', 'dtype': 'bytes', 'shape': [1], 'offset': 0, 'nbytes': 5008}]",
         "struct.pack('<Q', 5000) + b'1' * 5000", "layout flag that is not 0 or 1"),
        ("[{'name': 'keras_layout', 'dtype': 'complex64', 'shape': [1], 'offset': 0, 'nbytes': 8}]",
         "bytes(8)", "layout flag that is not 0 or 1"),
        ("[{'name': 'keras_layout', 'dtype': 'uint8', 'shape': [1], 'offset': 0, 'nbytes': 1}]",
         "b'\\x02'", "layout flag that is not 0 or 1"),
        ("[{'name': 'model_config', 'dtype': 'float32', 'shape': [1], 'offset': 0, 'nbytes': 4}]",
         "bytes(4)", "answered model_config that is not bytes"),
        ("[{'name': 'x', 'dtype': 'uint8', 'shape': [1], 'offset': 0, 'nbytes': 1}]",
         "b'1'", "answered unknown entries (x)"),
    ],
)  # fmt: skip
def test_a_hostile_hdf5_answer_is_an_error_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, specs: str, payload: str, message: str
) -> None:
    _exploited(monkeypatch, tmp_path, _answer(specs, payload))
    report = scan_one(write_h5(tmp_path / "m.h5", legacy_sequential()))
    assert report.verdict is Verdict.ERROR
    assert any(message in f.message for f in report.findings), [f.message for f in report.findings]


@pytest.mark.parametrize(("extra", "ok"), [(-1, True), (0, True), (1, False)])
def test_the_hdf5_answer_is_capped_at_what_the_scan_accepts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extra: int, ok: bool
) -> None:
    """The job's frame is capped at two configs of max_header_bytes plus the layout flag and
    its table (it was the job's memory, 8 GiB: a 1 GiB attribute was received and copied before
    the size check). An answer of N-1 and N bytes is read, N+1 refused before its payload."""
    from airlock._formats.keras import _h5_reply_cap

    limits = Limits(max_header_bytes=1 << 16)
    cap = _h5_reply_cap(limits)
    size = 1 << 16
    config = json.dumps(legacy_sequential()).encode()
    specs = (
        f"[{{'name': 'model_config', 'dtype': 'uint8', 'shape': [{size}], 'offset': 0, 'nbytes': {size}}}, "
        f"{{'name': 'training_config', 'dtype': 'uint8', 'shape': [{size}], 'offset': {size}, 'nbytes': {size}}}, "
        f"{{'name': 'keras_layout', 'dtype': 'uint8', 'shape': [1], 'offset': {2 * size}, 'nbytes': 1}}]"
    )
    body = f"({config!r} + b' ' * {size - len(config)}) * 2 + b'\\x00'"
    header = cap - (2 * size + 1) + extra  # the frame is header + payload: cap + extra bytes
    seen = _exploited(monkeypatch, tmp_path, _answer(specs, body, pad=header))
    path = write_h5(tmp_path / "m.h5", legacy_sequential())
    if ok:
        found = _h5_read(path, limits)
        assert not [i for i in found if i.severity is Severity.ERROR], found
    else:
        with pytest.raises(
            LimitError,
            match=rf"larger than {1 << 16} bytes each \(limit max_header_bytes\): the sandboxed reader's "
            rf"answer was refused: .*frame of {cap + 1} bytes exceeds the cap of {cap}$",
        ):
            _h5_read(path, limits)
    assert seen["policy"].limits.frame_bytes == cap
