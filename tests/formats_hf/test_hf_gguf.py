"""GGUF: counts and lengths checked before allocation, chat templates analysed, real files clean."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airlock
from airlock import Severity, Verdict
from airlock._formats.base import Issue, ReadContext, Template
from airlock._formats.gguf import GGML_TYPES, GGUFReader
from airlock._render.text import render as render_text
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS
from tests.formats_hf import gguf_fuzz
from tests.formats_hf.chat_templates import PUBLIC
from tests.formats_hf.gguf_build import ARRAY, BOOL, GGUF, STRING, UINT8, UINT32, Tensor, gstr
from tests.formats_hf.test_hf_template import cve_2024_34359

READER = GGUFReader()


def _facts(blob: bytes) -> list[Issue | Template]:
    ctx = ReadContext(limits=DEFAULT_LIMITS, file_path=Path("x"), root=Path("."))
    return [f for f in READER.read(memoryview(blob), ctx) if isinstance(f, Issue | Template)]


def _issues(blob: bytes) -> list[Issue]:
    return [f for f in _facts(blob) if isinstance(f, Issue)]


def _write_reference(path: Path, templates: dict[str, str]) -> Path:
    """A GGUF written by the reference writer (gguf-py), with a vocabulary and quantized tensors."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(128)
    writer.add_token_list(["<s>", "</s>", "{{", "▁hi", *[f"t{i}" for i in range(200)]])
    writer.add_token_scores([0.0] * 204)
    for key, text in templates.items():
        writer.add_string(key, text)
    writer.add_tensor("tok_embd.weight", np.ones((8, 64), dtype=np.float32))
    writer.add_tensor("out.weight", np.ones((4, 32), dtype=np.float16))
    writer.add_tensor("blk.0.q8", np.zeros((2, 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor(
        "blk.0.q4k", np.zeros((1, 144), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q4_K
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    "family", ["llama3", "llama3.2-tools", "mistral", "qwen2-chatml", "qwen3", "gemma", "phi3"]
)
def test_reference_gguf_with_public_chat_template_is_clean(tmp_path: Path, family: str) -> None:
    path = _write_reference(tmp_path / "m.gguf", {"tokenizer.chat_template": PUBLIC[family]})
    report = airlock.scan(path)
    assert report.verdict is Verdict.CLEAN, render_text(report)
    assert report.files[0].format == "gguf"
    templates = [f for f in _facts(path.read_bytes()) if isinstance(f, Template)]
    assert [t.name for t in templates] == ["tokenizer.chat_template"]
    assert templates[0].text == PUBLIC[family]


def test_reader_agrees_with_the_reference_parser(tmp_path: Path) -> None:
    path = _write_reference(tmp_path / "m.gguf", {"tokenizer.chat_template.tool_use": PUBLIC["qwen3"]})
    ref = gguf.GGUFReader(str(path))
    assert len(ref.tensors) == 4
    assert _issues(path.read_bytes()) == []
    assert [f.name for f in _facts(path.read_bytes()) if isinstance(f, Template)] == [
        "tokenizer.chat_template.tool_use"
    ]


def test_cve_2024_34359_chat_template_is_malicious_and_named(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _write_reference(tmp_path / "evil.gguf", {"tokenizer.chat_template": cve_2024_34359(marker)})
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    ssti = [f for f in report.findings() if f.rule == "template.ssti"]
    assert any("__subclasses__" in (f.callable or "") for f in ssti)
    assert all("tokenizer.chat_template" in f.message for f in ssti)
    assert not marker.exists()


def test_other_metadata_strings_that_look_like_jinja_are_analysed(tmp_path: Path) -> None:
    blob = GGUF(kv=[("general.description", STRING, "{{ cycler.__init__.__globals__.os }}")]).build()
    path = tmp_path / "m.gguf"
    path.write_bytes(blob)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS
    assert any("general.description" in f.message for f in report.findings())


@pytest.mark.parametrize(
    ("model", "rule", "severity", "match"),
    [
        (
            GGUF(n_kv=2**60),
            "gguf.count-exceeds-file",
            Severity.MALICIOUS,
            r"metadata count 1152921504606846976 needs",
        ),
        (
            GGUF(n_tensors=2**40),
            "gguf.count-exceeds-file",
            Severity.MALICIOUS,
            r"tensor count 1099511627776 needs",
        ),
        (
            GGUF(n_kv=2, kv=[("a", UINT8, 1)]),
            "gguf.count-exceeds-file",
            Severity.ERROR,
            r"metadata count 2 needs at least 26 bytes but only 14 remain",
        ),
        (GGUF(kv=[("a", ARRAY, (UINT32, [1, 2]))]), None, None, None),
    ],
)
def test_counts_beyond_the_file(
    model: GGUF, rule: str | None, severity: Severity | None, match: str | None
) -> None:
    issues = _issues(model.build())
    if rule is None:
        assert issues == []
        return
    (issue,) = issues
    assert (issue.rule, issue.severity) == (rule, severity)
    assert match is not None
    assert re.search(match, issue.message), issue.message


def test_string_length_beyond_the_file_is_malicious() -> None:
    blob = GGUF(kv=[("a", UINT8, 1)]).build()
    # replace the key's length by 2**62: the reader must stop before reading or allocating it
    evil = blob[:24] + struct.pack("<Q", 2**62) + blob[32:]
    (issue,) = _issues(evil)
    assert issue.rule == "gguf.length-exceeds-file"
    assert issue.severity is Severity.MALICIOUS
    assert "key length 4611686018427387904 needs" in issue.message


def test_array_count_beyond_the_file_is_malicious(tmp_path: Path) -> None:
    blob = GGUF(kv=[("tokenizer.ggml.tokens", ARRAY, (STRING, ["a"]))]).build()
    head = blob.index(b"tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens") + 4 + 4
    evil = blob[:head] + struct.pack("<Q", 2**61) + blob[head + 8 :]
    path = tmp_path / "m.gguf"
    path.write_bytes(evil)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS
    (finding,) = report.findings()
    assert finding.rule == "gguf.count-exceeds-file"
    assert "array 'tokenizer.ggml.tokens' element count 2305843009213693952" in finding.message


def test_string_in_array_beyond_the_file() -> None:
    blob = GGUF(kv=[("toks", ARRAY, (STRING, ["abc", "de"]))]).build()
    pos = blob.index(b"abc") + 3
    evil = blob[:pos] + struct.pack("<Q", 10_000) + blob[pos + 8 :]
    (issue,) = _issues(evil)
    assert issue.rule == "gguf.length-exceeds-file"
    assert "array 'toks' string length 10000" in issue.message


@pytest.mark.parametrize(
    ("model", "rule", "match"),
    [
        (GGUF(kv=[("a", 13, 0)]), "gguf.value-type", r"value type 13 is unknown"),
        (GGUF(kv=[("a", ARRAY, (99, []))]), "gguf.value-type", r"value type 99"),
        (GGUF(kv=[("a", UINT8, 1), ("a", UINT8, 2)]), "gguf.duplicate-key", r"'a' appears twice"),
        (GGUF(kv=[("a", BOOL, True)]), None, None),
        (GGUF(kv=[("general.alignment", UINT32, 24)]), "gguf.alignment", r"24, expected a power of two"),
        (GGUF(kv=[("general.alignment", UINT8, 32)]), "gguf.alignment", r"type UINT8, expected UINT32"),
        (GGUF(tensors=[Tensor("w", [4]), Tensor("w", [4])]), "gguf.duplicate-tensor", r"'w' appears twice"),
        (GGUF(tensors=[Tensor("w", [1, 1, 1, 1, 1])]), "gguf.tensor-dims", r"n_dims 5, expected 1..4"),
        (GGUF(tensors=[Tensor("w", [4], ggml_type=4)]), "gguf.tensor-type", r"ggml type 4 is unknown"),
        (
            GGUF(tensors=[Tensor("w", [33], ggml_type=8, nbytes=34)]),
            "gguf.tensor-size",
            r"33 is not a multiple of the Q8_0 block size 32",
        ),
        (
            GGUF(tensors=[Tensor("w", [4], offset=8)]),
            "gguf.tensor-alignment",
            r"offset 8 is not a multiple of the alignment 32",
        ),
        (
            GGUF(tensors=[Tensor("a", [16]), Tensor("b", [16], offset=32)]),
            "gguf.tensor-overlap",
            r"'b': data \[32, 96\) overlaps tensor 'a'",
        ),
        (
            GGUF(tensors=[Tensor("a", [8]), Tensor("b", [8], offset=256)]),
            "gguf.tensor-gap",
            r"224 unreferenced bytes",
        ),
        (
            GGUF(tensors=[Tensor("a", [8])], trailing=b"\0" * 64),
            "gguf.trailing",
            r"64 bytes after the last tensor",
        ),
        (
            GGUF(tensors=[Tensor("a", [2**40], nbytes=4)]),
            "gguf.tensor-out-of-bounds",
            r"ends past the data region",
        ),
    ],
)
def test_structural_rules(model: GGUF, rule: str | None, match: str | None) -> None:
    issues = _issues(model.build())
    if rule is None:
        assert issues == []
        return
    assert rule in {i.rule for i in issues}, issues
    assert match is not None
    assert any(re.search(match, i.message) for i in issues if i.rule == rule), issues


@pytest.mark.parametrize(
    ("blob", "error", "match"),
    [
        (
            b"GGUF" + struct.pack("<IQQ", 1, 0, 0),
            FormatError,
            r"GGUF version 1 is not supported, expected 2 or 3",
        ),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), FormatError, r"byte-swapped: a big-endian GGUF"),
        (b"GGUF\x03\0\0\0", FormatError, r"shorter than the 24-byte GGUF header"),
        (
            GGUF(kv=[("\udcff".encode("utf-8", "surrogateescape").decode("latin-1"), UINT8, 1)])
            .build()
            .replace(b"\xc3\xbf", b"\xff\xff"),
            FormatError,
            r"not valid UTF-8",
        ),
    ],
)
def test_unparseable_headers_raise(blob: bytes, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _facts(blob)


def test_nested_arrays_are_bounded() -> None:
    nested: tuple[int, object] = (UINT8, [1])
    for _ in range(20):
        nested = (ARRAY, [nested])
    blob = GGUF(kv=[("deep", ARRAY, nested)]).build()
    with pytest.raises(LimitError, match=r"nested deeper than 8 \(limit max_gguf_array_depth\)"):
        _facts(blob)
    shallow = GGUF(kv=[("ok", ARRAY, (ARRAY, [(UINT8, [1, 2]), (STRING, ["x"])]))]).build()
    assert _issues(shallow) == []


def test_ggml_type_table_matches_the_reference() -> None:
    ref = {int(t): (t.name, *gguf.constants.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType}
    assert ref == GGML_TYPES


def test_sniff_by_content(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    _write_reference(path, {})
    assert airlock.scan(path).files[0].format == "gguf"


def test_template_parse_error_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(GGUF(kv=[("tokenizer.chat_template", STRING, "{% for x in y %}")]).build())
    report = airlock.scan(path)
    assert report.verdict is Verdict.ERROR
    assert [f.rule for f in report.findings()] == ["template.parse"]


def test_payload_not_run_even_when_rendering_would(tmp_path: Path) -> None:
    """The same GGUF template, rendered by plain jinja2 in a throwaway process, runs its payload."""
    marker = tmp_path / "pwned"
    path = _write_reference(tmp_path / "evil.gguf", {"tokenizer.chat_template": cve_2024_34359(marker)})
    airlock.scan(path)
    assert not marker.exists()
    code = (
        "import gguf, jinja2, sys\n"
        "r = gguf.GGUFReader(sys.argv[1])\n"
        "f = r.fields['tokenizer.chat_template']\n"
        "jinja2.Environment().from_string(bytes(f.parts[f.data[0]]).decode()).render()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=60, check=False)
    assert marker.exists()


_VALID = GGUF(
    kv=[("general.name", STRING, "x"), ("toks", ARRAY, (STRING, ["a", "bc"])), ("n", UINT32, 7)],
    tensors=[Tensor("a", [8]), Tensor("b", [2, 4])],
).build()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutations_raise_only_format_errors(data: st.DataObject) -> None:
    blob = bytearray(_VALID)
    mode = data.draw(st.sampled_from(["flip", "truncate", "random", "splice"]))
    if mode == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(4, len(blob) - 1))
            blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif mode == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif mode == "splice":
        pos = data.draw(st.integers(4, len(blob) - 8))
        blob[pos : pos + 8] = struct.pack(
            "<Q", data.draw(st.sampled_from([0, 1, 2**32, 2**63 - 1, 2**64 - 1]))
        )
    else:
        blob = bytearray(b"GGUF" + data.draw(st.binary(max_size=200)))
    try:
        issues = _issues(bytes(blob))
    except FormatError:
        return
    if mode == "truncate":
        assert issues, "a truncated file passed every check"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, len(_VALID) - 1))
def test_fuzz_truncated_file_never_clean(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(_VALID[:cut])
    assert airlock.scan(path).verdict is not Verdict.CLEAN


def test_strings_use_gstr_helper() -> None:
    assert gstr("ab") == struct.pack("<Q", 2) + b"ab"


# --- chat templates where the real consumers find them (issue 10) -----------------------------

_LOAD_AND_RENDER = (
    "import jinja2, sys\n"
    "from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint\n"
    "template = load_gguf_checkpoint(sys.argv[1])['tokenizer_config']['chat_template']\n"
    "assert isinstance(template, str), type(template)\n"
    "jinja2.Environment().from_string(template).render(messages=[])\n"
)


def _write_with_array(path: Path, key: str, pieces: list[str]) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(128)
    writer.add_token_list(["<s>", "</s>", "a", "b"])
    writer.add_token_scores([0.0] * 4)
    writer.add_array(key, pieces)
    writer.add_tensor("tok_embd.weight", np.ones((8, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_template_stored_as_a_one_element_array(tmp_path: Path) -> None:
    # transformers' GGUF loader unwraps a one-element array into the chat_template string.
    proof_marker = tmp_path / "proof"
    proof = _write_with_array(
        tmp_path / "proof.gguf", "tokenizer.chat_template", [cve_2024_34359(proof_marker)]
    )
    subprocess.run([sys.executable, "-c", _LOAD_AND_RENDER, str(proof)], check=True, timeout=300)
    assert proof_marker.exists()

    marker = tmp_path / "pwned"
    path = _write_with_array(tmp_path / "evil.gguf", "tokenizer.chat_template", [cve_2024_34359(marker)])
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    ssti = [f for f in report.findings() if f.rule == "template.ssti"]
    assert ssti and all("tokenizer.chat_template[0]" in f.message for f in ssti)
    assert not marker.exists()


def test_template_split_over_array_elements_is_analysed_joined(tmp_path: Path) -> None:
    # each piece alone is harmless text; a consumer that joins them gets the payload
    payload = cve_2024_34359(tmp_path / "pwned")
    cut = payload.index("__subclasses__") + 4
    path = _write_with_array(
        tmp_path / "evil.gguf", "tokenizer.chat_template.rag", [payload[:cut], payload[cut:]]
    )
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    assert any(f.rule == "template.ssti" and "(elements joined)" in f.message for f in report.findings()), (
        render_text(report)
    )


def test_vocabulary_arrays_are_still_skipped_not_analysed() -> None:
    blob = GGUF(kv=[("tokenizer.ggml.tokens", ARRAY, (STRING, ["{{", "}}", "{%", "%}"]))]).build()
    assert _facts(blob) == []


@pytest.mark.parametrize(
    "key", ["tokenizer.chat_template\0", "tokenizer.chat_template\0.bak", "tokenizer.chat_template.x\0"]
)
def test_key_with_a_nul_is_the_template_key_to_llama_cpp(tmp_path: Path, key: str) -> None:
    # llama.cpp's loader keeps metadata in a map keyed by gguf_get_key(), a C string: the key is
    # cut at the first NUL. gguf-py keeps the NUL (so transformers ignores the key) — the file is
    # valid for the reference parser, and airlock must read it the way llama.cpp does.
    marker = tmp_path / "pwned"
    blob = GGUF(kv=[("general.architecture", STRING, "llama"), (key, STRING, cve_2024_34359(marker))]).build()
    path = tmp_path / "m.gguf"
    path.write_bytes(blob)
    assert key in gguf.GGUFReader(str(path)).fields
    templates = [f for f in _facts(blob) if isinstance(f, Template)]
    assert [t.name for t in templates] == [key.replace("\0", "\\0")]
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)


def test_keys_equal_up_to_a_nul_are_a_duplicate() -> None:
    blob = GGUF(
        kv=[
            ("tokenizer.chat_template\0", STRING, "{{ 'a' }}"),
            ("tokenizer.chat_template", STRING, "{{ 'b' }}"),
        ]
    ).build()
    issues = _issues(blob)
    assert [i.rule for i in issues] == ["gguf.duplicate-key"]
    assert "cuts keys at the first NUL" in issues[0].message
    assert len([f for f in _facts(blob) if isinstance(f, Template)]) == 2


@pytest.mark.parametrize("key", ["tokenizer.chat_template", "tokenizer.chat_template\0", "general.notes"])
@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_template_size_at_the_limit(tmp_path: Path, key: str, extra: int) -> None:
    limit = DEFAULT_LIMITS.max_template_bytes
    evil = "{{ cycler.__init__.__globals__.os.popen('id') }}"
    text = evil + " " * (limit + extra - len(evil))
    assert len(text.encode()) == limit + extra
    path = tmp_path / "m.gguf"
    path.write_bytes(GGUF(kv=[(key, STRING, text)]).build())
    report = airlock.scan(path)
    rules = {f.rule for f in report.findings()}
    if extra <= 0:
        assert report.verdict is Verdict.MALICIOUS, render_text(report)
    else:  # too large to analyse: an error, never clean
        assert report.verdict is Verdict.ERROR, render_text(report)
        assert "template.parse" in rules


def test_template_array_over_the_limit_is_an_error(tmp_path: Path) -> None:
    limit = DEFAULT_LIMITS.max_template_bytes
    pieces = ["{{ 'x' }}" + " " * (limit // 2)] * 3
    path = tmp_path / "m.gguf"
    path.write_bytes(GGUF(kv=[("tokenizer.chat_template", ARRAY, (STRING, pieces))]).build())
    report = airlock.scan(path)
    assert report.verdict is Verdict.ERROR, render_text(report)
    assert any("max_template_bytes" in f.message for f in report.findings())


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_files_every_consumer_template_is_analysed(tmp_path: Path, seed: int) -> None:
    bad, stats = gguf_fuzz.disagreements(tmp_path, seed, 400)
    assert not bad, "\n".join(bad[:10])
    assert stats["covered"] > 150, stats


def test_large_plain_metadata_string_is_not_a_template(tmp_path: Path) -> None:
    limit = DEFAULT_LIMITS.max_template_bytes
    text = "{ x }" + "a" * (2 * limit) + "{{ y }"  # no complete marker pair
    path = tmp_path / "m.gguf"
    path.write_bytes(GGUF(kv=[("general.notes", STRING, text)]).build())
    assert airlock.scan(path).verdict is Verdict.CLEAN


def test_markers_across_the_chunk_boundary_are_found(tmp_path: Path) -> None:
    limit = DEFAULT_LIMITS.max_template_bytes
    text = "a" * ((1 << 20) - 1) + "{{ evil }}" + "b" * limit
    path = tmp_path / "m.gguf"
    path.write_bytes(GGUF(kv=[("general.notes", STRING, text)]).build())
    report = airlock.scan(path)
    assert report.verdict is Verdict.ERROR
    assert "template.parse" in {f.rule for f in report.findings()}
