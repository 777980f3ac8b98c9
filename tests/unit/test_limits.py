"""Limits at N-1, N and N+1 where a reader enforces them exactly, and lengths within a few bytes of
the end of the file.

safetensors: ``8 + header length`` must fit the file. A header length that overruns the file by 1..8
bytes is an ERROR (a bound checked against ``size`` instead of ``size - 8`` lets a Python slice
silently truncate the header and the file would scan CLEAN). The data region must be tiled exactly.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest

import airlock
from airlock import Verdict
from airlock._analysis.template import analyse_template
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.results import Finding

#: A header with one empty tensor: valid with no data bytes at all, so the header ends the file.
EMPTY_TENSOR = {"t": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}


def _st(path: Path, raw: bytes, length: int, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", length) + raw + data)
    return path


def _scan(path: Path, limits: Limits = DEFAULT_LIMITS) -> tuple[Verdict, list[Finding]]:
    report = airlock.scan(path, limits=limits)
    return report.verdict, list(report.findings())


def test_header_that_ends_the_file_exactly_is_clean(tmp_path: Path) -> None:
    raw = json.dumps(EMPTY_TENSOR).encode()
    verdict, findings = _scan(_st(tmp_path / "m.safetensors", raw, len(raw)))
    assert (verdict, findings) == (Verdict.CLEAN, [])


@pytest.mark.parametrize("over", [1, 2, 7, 8, 9, 16])
def test_header_length_past_the_end_of_the_file_is_an_error(tmp_path: Path, over: int) -> None:
    raw = json.dumps(EMPTY_TENSOR).encode()
    path = _st(tmp_path / "m.safetensors", raw, len(raw) + over)
    verdict, findings = _scan(path)
    assert verdict is Verdict.ERROR
    (finding,) = findings
    assert finding.rule == "format.error"
    assert "exceeds file size" in finding.message
    assert finding.location.offset == 0


@pytest.mark.parametrize("short", [1, 8])
def test_header_length_short_of_the_json_is_an_error(tmp_path: Path, short: int) -> None:
    raw = json.dumps(EMPTY_TENSOR).encode()
    verdict, findings = _scan(_st(tmp_path / "m.safetensors", raw, len(raw) - short))
    assert verdict is Verdict.ERROR
    assert findings
    assert findings[0].rule == "format.error"


@pytest.mark.parametrize("pad", [1, 8])
def test_padding_that_turns_into_data_bytes_is_trailing(tmp_path: Path, pad: int) -> None:
    # header padded with spaces, length short by ``pad``: the spaces become an unreferenced data region
    raw = json.dumps(EMPTY_TENSOR).encode() + b" " * pad
    verdict, findings = _scan(_st(tmp_path / "m.safetensors", raw, len(raw) - pad))
    assert verdict is Verdict.ERROR
    (finding,) = findings
    assert finding.rule == "safetensors.trailing"
    assert finding.message.startswith(f"{pad} bytes after the last tensor")
    assert finding.location.offset == 8 + len(raw) - pad


@pytest.mark.parametrize(
    ("end", "rule"), [(7, "safetensors.trailing"), (8, None), (9, "safetensors.out-of-bounds")]
)
def test_tensor_end_at_data_size_minus_1_n_plus_1(tmp_path: Path, end: int, rule: str | None) -> None:
    header = {"t": {"dtype": "U8", "shape": [end], "data_offsets": [0, end]}}
    raw = json.dumps(header).encode()
    verdict, findings = _scan(_st(tmp_path / "m.safetensors", raw, len(raw), b"\0" * 8))
    assert [f.rule for f in findings] == ([] if rule is None else [rule])
    assert verdict is (Verdict.CLEAN if rule is None else Verdict.ERROR)


@pytest.mark.parametrize(
    ("limit_delta", "expected"), [(-1, Verdict.ERROR), (0, Verdict.CLEAN), (1, Verdict.CLEAN)]
)
def test_max_header_bytes_at_n_minus_1_n_n_plus_1(
    tmp_path: Path, limit_delta: int, expected: Verdict
) -> None:
    raw = json.dumps(EMPTY_TENSOR).encode()
    limits = dataclasses.replace(DEFAULT_LIMITS, max_header_bytes=len(raw) + limit_delta)
    verdict, findings = _scan(_st(tmp_path / "m.safetensors", raw, len(raw)), limits)
    assert verdict is expected
    if expected is Verdict.ERROR:
        (finding,) = findings
        assert finding.rule == "limit.exceeded"
        assert "max_header_bytes" in finding.message
        assert finding.location.offset == 0


@pytest.mark.parametrize(("delta", "over"), [(-1, False), (0, False), (1, True)])
def test_max_template_bytes_at_n_minus_1_n_n_plus_1(delta: int, over: bool) -> None:
    text = "{{ messages[0]['content'] }}"
    size = len(text.encode()) - delta  # template of N-1, N or N+1 bytes against a limit of N
    limits = dataclasses.replace(DEFAULT_LIMITS, max_template_bytes=size)
    issues = analyse_template("t", text, limits)
    if over:
        assert [(i.rule, i.severity.value) for i in issues] == [("template.parse", "ERROR")]
        assert "exceeds limit max_template_bytes" in issues[0].message
    else:
        assert issues == []


def test_template_size_counts_utf8_bytes_not_characters() -> None:
    text = "{{ 'é' }}"  # 9 characters, 10 bytes
    limits = dataclasses.replace(DEFAULT_LIMITS, max_template_bytes=len(text))
    assert [i.rule for i in analyse_template("t", text, limits)] == ["template.parse"]


def _nested(depth: int) -> bytes:
    """A pickle that hands a pickle to pickle.loads, ``depth`` times; the innermost builds a list."""
    from tests.fixtures.picklegen import binbytes, call, program, sglob

    data = program(b"]")
    for _ in range(depth):
        data = program(call(sglob("pickle", "loads"), binbytes(data)))
    return data


@pytest.mark.parametrize(("depth", "over"), [(2, False), (3, False), (4, True)])
def test_max_nested_pickle_depth_at_n_minus_1_n_n_plus_1(tmp_path: Path, depth: int, over: bool) -> None:
    path = tmp_path / "n.pkl"
    path.write_bytes(_nested(depth))
    limits = dataclasses.replace(DEFAULT_LIMITS, max_nested_pickle_depth=3)
    _verdict, findings = _scan(path, limits)
    exceeded = [f for f in findings if f.rule == "limit.exceeded"]
    assert bool(exceeded) is over
    if over:
        (finding,) = exceeded
        assert finding.message == "pickles nested deeper than 3 (limit max_nested_pickle_depth)"
        assert len(finding.location.members) == 4  # the fourth nested pickle is the one refused


@pytest.mark.parametrize(("count", "over"), [(2, False), (3, False), (4, True)])
def test_max_pickles_per_stream_at_n_minus_1_n_n_plus_1(tmp_path: Path, count: int, over: bool) -> None:
    from tests.fixtures.picklegen import program

    path = tmp_path / "s.pkl"
    path.write_bytes(program(b"]") * count)
    limits = dataclasses.replace(DEFAULT_LIMITS, max_pickles_per_stream=3)
    verdict, findings = _scan(path, limits)
    exceeded = [f for f in findings if f.rule == "limit.exceeded"]
    assert bool(exceeded) is over, findings
    if over:
        assert exceeded[0].message == "more than 3 pickles in one stream (limit max_pickles_per_stream)"
        assert exceeded[0].location.offset == 3 * len(program(b"]"))
        assert verdict is Verdict.ERROR
