"""safetensors header checks as tables: each tensor rule with its exact id, message and offset,
sizes at N-1/N/N+1 (including the 2**64-element bound), layouts that tile, overlap, leave gaps or
run past the data region, and the helpers that write the messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from airlock._formats import safetensors as st
from airlock._formats.base import Issue, ReadContext
from airlock.errors import FormatError
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Severity


def _tensor(dtype: Any = "F32", shape: Any = (2,), offsets: Any = (0, 8)) -> dict[str, Any]:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def _rules(info: object) -> list[tuple[str, str]]:
    return [(i.rule, i.message) for i in st._check_tensor("w", info)[1]]


def test_valid_tensor_at_an_offset() -> None:
    span, issues = st._check_tensor("w", _tensor("F32", (2, 3), (16, 40)))
    assert (span, issues) == ((16, 40), [])


@pytest.mark.parametrize(("end", "ok"), [(39, False), (40, True), (41, False)])
def test_span_at_n_minus_1_n_n_plus_1_from_a_nonzero_begin(end: int, ok: bool) -> None:
    span, issues = st._check_tensor("w", _tensor("F32", (2, 3), (16, end)))
    assert span == (16, end)
    if ok:
        assert issues == []
    else:
        (issue,) = issues
        assert (issue.rule, issue.severity, issue.offset) == ("safetensors.size-mismatch", Severity.ERROR, 8)
        assert (
            issue.message
            == f"tensor 'w': shape [2, 3] x F32 is 24 bytes but data_offsets span {end - 16} bytes"
        )


def test_sub_byte_total_is_refused() -> None:
    four_bit = next((d for d, b in st.DTYPE_BITS.items() if b == 4), None)
    if four_bit is None:
        pytest.skip("no 4-bit dtype")
    (issue,) = st._check_tensor("w", _tensor(four_bit, (3,), (0, 2)))[1]
    assert issue.rule == "safetensors.size-mismatch"
    assert issue.message == f"tensor 'w': shape [3] x {four_bit} is 12 bits, not a whole number of bytes"
    assert issue.offset == 8
    assert st._check_tensor("w", _tensor(four_bit, (4,), (0, 2)))[1] == []


@pytest.mark.parametrize(
    ("shape", "too_many"),
    [
        ([2**32, 2**32], False),
        ([2**32, 2**32 + 1], True),
        ([2**64 - 1], False),
        ([2**64 - 1, 2], True),
        ([2**63, 2, 0], False),
    ],
)
def test_element_count_bound_at_2_pow_64(shape: list[int], too_many: bool) -> None:
    issues = st._check_tensor("w", _tensor("U8", shape, (0, 8)))[1]
    (issue,) = issues
    assert issue.rule == "safetensors.size-mismatch"
    if too_many:
        assert (
            issue.message
            == f"tensor 'w': shape {shape} x U8 needs more than the 8 bytes its data_offsets span"
        )
    else:
        assert "needs more than" not in issue.message


@pytest.mark.parametrize(
    ("shape", "cap", "expected"),
    [
        ([], 10, 1),
        ([2, 5], 10, 10),
        ([2, 6], 10, 11),
        ([11], 10, 11),
        ([100, 0], 10, 0),
        ([0, 100], 10, 0),
        ([3, 4], 12, 12),
    ],
)
def test_elements(shape: list[int], cap: int, expected: int) -> None:
    assert st._elements(shape, cap) == expected


@pytest.mark.parametrize(
    ("info", "rule", "message"),
    [
        ([1], "safetensors.header-schema", "tensor 'w': entry is a JSON list, expected an object"),
        (
            {"dtype": "F32", "shape": [2]},
            "safetensors.header-schema",
            "tensor 'w': keys missing ['data_offsets'], unexpected []",
        ),
        (
            {**_tensor(), "x": 1, "y": 2},
            "safetensors.header-schema",
            "tensor 'w': keys missing [], unexpected ['x', 'y']",
        ),
        (_tensor(offsets=(9, 8)), "safetensors.offsets", "tensor 'w': data_offsets begin 9 is after end 8"),
        (
            _tensor(offsets=(0, -1)),
            "safetensors.header-schema",
            "tensor 'w': data_offsets must be two integers in 0..2**64-1, got [0, -1]",
        ),
        (
            _tensor(offsets=(0, 2**64)),
            "safetensors.header-schema",
            f"tensor 'w': data_offsets must be two integers in 0..2**64-1, got [0, {2**64}]",
        ),
        (
            _tensor(offsets=(0, True)),
            "safetensors.header-schema",
            "tensor 'w': data_offsets must be two integers in 0..2**64-1, got [0, True]",
        ),
        (
            _tensor(offsets=(0, 8, 16)),
            "safetensors.header-schema",
            "tensor 'w': data_offsets must be two integers in 0..2**64-1, got [0, 8, 16]",
        ),
        (_tensor(dtype="F33"), "safetensors.dtype", "tensor 'w': unknown dtype 'F33'"),
        (_tensor(dtype=32), "safetensors.dtype", "tensor 'w': unknown dtype 32"),
        (
            _tensor(shape=(2, -1)),
            "safetensors.header-schema",
            "tensor 'w': shape must be a list of integers in 0..2**64-1, got [2, -1]",
        ),
        (
            {**_tensor(), "shape": "2"},
            "safetensors.header-schema",
            "tensor 'w': shape must be a list of integers in 0..2**64-1, got '2'",
        ),
    ],
)
def test_tensor_rules(info: object, rule: str, message: str) -> None:
    assert _rules(info) == [(rule, message)]
    for issue in st._check_tensor("w", info)[1]:
        assert (issue.severity, issue.offset) == (Severity.ERROR, 8)


def test_bad_offsets_give_no_span() -> None:
    assert st._check_tensor("w", _tensor(offsets=(9, 8)))[0] is None
    assert st._check_tensor("w", _tensor(offsets=(0, -1)))[0] is None


def _layout(spans: list[tuple[int, int, str]], size: int) -> list[tuple[str, Severity, str, int | None]]:
    return [(i.rule, i.severity, i.message, i.offset) for i in st._check_layout(list(spans), size, 100)]


def test_layout_tiles_exactly() -> None:
    assert _layout([(8, 16, "b"), (0, 8, "a")], 16) == []
    assert _layout([], 0) == []
    assert _layout([(0, 0, "empty"), (0, 4, "a")], 4) == []


def test_layout_overlap_is_malicious_and_names_both() -> None:
    issues = list(st._check_layout([(0, 8, "a"), (4, 12, "b")], 12, 100))
    (issue,) = issues
    assert (issue.rule, issue.severity, issue.offset) == ("safetensors.overlap", Severity.MALICIOUS, 104)
    assert issue.evidence == "b@[4,12] overlaps a"
    assert issue.message == (
        "tensor 'b': data_offsets [4, 12] overlap the bytes of tensor 'a' (covered up to 8); tensors must not alias"
    )


def test_layout_overlap_inside_an_earlier_tensor_keeps_its_name() -> None:
    issues = list(st._check_layout([(0, 16, "a"), (2, 4, "b"), (4, 6, "c")], 16, 0))
    assert [i.evidence for i in issues] == ["b@[2,4] overlaps a", "c@[4,6] overlaps a"]


def test_layout_gap_and_trailing() -> None:
    assert _layout([(0, 4, "a"), (6, 8, "b")], 8) == [
        (
            "safetensors.gap",
            Severity.ERROR,
            "tensor 'b': data_offsets begin 6 leaves a gap of 2 unreferenced bytes after offset 4",
            104,
        )
    ]
    assert _layout([(0, 4, "a")], 5) == [
        (
            "safetensors.trailing",
            Severity.ERROR,
            "1 bytes after the last tensor (data region 5 bytes, tensors cover 4 bytes)",
            104,
        )
    ]


@pytest.mark.parametrize(("end", "bad"), [(15, False), (16, False), (17, True)])
def test_layout_out_of_bounds_at_n_minus_1_n_n_plus_1(end: int, bad: bool) -> None:
    rules = [r for r, *_ in _layout([(0, end, "a")], 16)]
    assert ("safetensors.out-of-bounds" in rules) is bad
    if bad:
        (oob,) = [
            i for i in st._check_layout([(0, end, "a")], 16, 100) if i.rule == "safetensors.out-of-bounds"
        ]
        assert oob.message == "tensor 'a': data_offsets end 17 bytes exceeds the data region of 16 bytes"
        assert (oob.severity, oob.offset) == (Severity.ERROR, 100)


def test_metadata() -> None:
    assert list(st._check_metadata(None)) == []
    assert list(st._check_metadata({"a": "b"})) == []
    (issue,) = st._check_metadata(["x"])
    assert (issue.rule, issue.message, issue.offset) == (
        "safetensors.header-schema",
        "__metadata__ is a JSON list, expected an object of strings",
        8,
    )
    issues = list(st._check_metadata({"a": 1, "b": "ok", "c": None}))
    assert [(i.rule, i.message, i.severity, i.offset) for i in issues] == [
        (
            "safetensors.metadata-type",
            "__metadata__['a'] is a JSON int, expected a string",
            Severity.ERROR,
            8,
        ),
        (
            "safetensors.metadata-type",
            "__metadata__['c'] is a JSON NoneType, expected a string",
            Severity.ERROR,
            8,
        ),
    ]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 bytes"),
        (9_999, "9999 bytes"),
        (10_000, "10,000 bytes (10.0 kB)"),
        (999_999, "999,999 bytes (1000.0 kB)"),
        (1_000_000, "1,000,000 bytes (1.0 MB)"),
        (2_500_000_000, "2,500,000,000 bytes (2.5 GB)"),
        (10**12, "1,000,000,000,000 bytes (1.0 TB)"),
    ],
)
def test_bytes(n: int, text: str) -> None:
    assert st._bytes(n) == text


def test_show_cuts_long_names() -> None:
    assert st._show("w") == "'w'"
    assert st._show("x" * 78) == "'" + "x" * 78 + "'"
    # cut to limit - 3 characters of the repr, then "...'" (cosmetic: one over the limit)
    assert st._show("x" * 79) == "'" + "x" * 76 + "...'"
    assert st._show("abcdef", limit=5) == "'a...'"


def test_shape_text_is_cut() -> None:
    assert st._shape([1, 2]) == "[1, 2]"
    assert st._shape(list(range(100))) == str(list(range(100)))[:57] + "...]"
    exact = [1] * 20  # "[1, 1, ..., 1]" is 59 characters
    assert st._shape(exact) == str(exact)


# -- the reader itself: edges of the file, the sniffer, the deadline cadence ---------------------------


def _read(data: bytes, check_time: Any = None) -> list[Issue]:
    ctx = ReadContext(DEFAULT_LIMITS, Path("m.safetensors"), Path("."))
    if check_time is not None:
        ctx = ctx._replace(check_time=check_time)
    return [fact for fact in st.READER.read(memoryview(data), ctx) if isinstance(fact, Issue)]


def _file(header: dict[str, Any], data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("size", [0, 7])
def test_file_shorter_than_the_length_prefix(size: int) -> None:
    with pytest.raises(FormatError) as caught:
        _read(b"\0" * size)
    assert str(caught.value) == f"file of {size} bytes is shorter than the 8-byte header length"
    assert caught.value.offset == 0


def test_file_of_exactly_the_prefix_has_an_empty_header() -> None:
    with pytest.raises(FormatError) as caught:
        _read(b"\0" * 8)
    assert "shorter than the 8-byte" not in str(caught.value)
    assert "safetensors header" in str(caught.value)


def test_header_json_errors_name_the_header_and_its_offset() -> None:
    with pytest.raises(FormatError) as caught:
        _read(struct.pack("<Q", 2) + b"{x")
    assert str(caught.value).startswith("safetensors header is not valid JSON")
    assert caught.value.offset == 8
    with pytest.raises(FormatError) as caught:
        _read(struct.pack("<Q", 2) + b"[]")
    assert str(caught.value) == "header is a JSON list, expected an object"
    assert caught.value.offset == 8


def test_header_json_error_points_at_the_header() -> None:
    # the offset is where the header starts; the message names the character inside it
    for raw, char in ((b"{x}", 1), (b" {x}", 2)):
        with pytest.raises(FormatError) as caught:
            _read(struct.pack("<Q", len(raw)) + raw)
        assert caught.value.offset == 8
        assert str(caught.value).endswith(f"at char {char}")


def test_metadata_first_does_not_hide_the_tensors() -> None:
    header = {"__metadata__": {"format": "pt"}, "w": _tensor("U8", (4,), (0, 4))}
    assert _read(_file(header, b"\0" * 4)) == []
    bad = {"__metadata__": {"format": "pt"}, "w": _tensor("U8", (5,), (0, 4))}
    assert [i.rule for i in _read(_file(bad, b"\0" * 4))] == ["safetensors.size-mismatch"]


def test_reader_names_the_tensor() -> None:
    (issue,) = _read(_file({"weight.0": _tensor("U8", (5,), (0, 4))}, b"\0" * 4))
    assert issue.message.startswith("tensor 'weight.0': ")


def test_deadline_is_checked_every_4096_tensors() -> None:
    calls: list[int] = []
    header = {f"t{i}": _tensor("U8", (0,), (0, 0)) for i in range(4097)}
    assert _read(_file(header), check_time=lambda: calls.append(1)) == []
    assert len(calls) == 2  # at tensors 0 and 4096


@pytest.mark.parametrize(
    ("head", "claimed"),
    [
        (struct.pack("<Q", 2) + b"{}", True),  # exactly 10 bytes
        (struct.pack("<Q", 2) + b"{", False),  # 9 bytes
        (struct.pack("<Q", 3) + b"\n{}", True),
        (struct.pack("<Q", 3) + b" \t{", True),
        (struct.pack("<Q", 3) + b"\x0b{}", False),  # not JSON whitespace
        (struct.pack("<Q", 3) + b"X{}", False),
        (struct.pack("<Q", 1) + b"{}", False),  # length 1: no JSON object fits
        (struct.pack("<Q", (1 << 32) - 1) + b"{}", True),
        (struct.pack("<Q", 1 << 32) + b"{}", False),
    ],
)
def test_sniff(head: bytes, claimed: bool) -> None:
    assert st.READER.sniff(head, 1 << 40) is claimed


def test_overlap_names_an_empty_tensor_name() -> None:
    (issue,) = st._check_layout([(0, 8, ""), (4, 8, "b")], 8, 0)
    assert "overlap the bytes of tensor '' (covered up to 8)" in issue.message


def test_overlap_keeps_naming_the_tensor_that_covered_the_bytes() -> None:
    issues = list(st._check_layout([(0, 8, "a"), (4, 8, "b"), (6, 8, "c")], 8, 0))
    assert [i.evidence for i in issues] == ["b@[4,8] overlaps a", "c@[6,8] overlaps a"]


def test_size_mismatch_issues_are_errors_at_the_header() -> None:
    for info in (_tensor("U8", [2**64 - 1, 2], (0, 8)), _tensor("F4", (3,), (0, 2))):
        (issue,) = st._check_tensor("w", info)[1]
        assert (issue.rule, issue.severity, issue.offset) == ("safetensors.size-mismatch", Severity.ERROR, 8)


def test_unexpected_keys_shown_five_at_most_and_cut() -> None:
    info = {**_tensor(), **{f"k{i}": 1 for i in range(6)}, "x" * 50: 1}
    (issue,) = st._check_tensor("w", info)[1]
    assert issue.message.startswith("tensor 'w': keys missing [], unexpected ['k0', 'k1', 'k2', 'k3', 'k4']")
    info = {**_tensor(), "y" * 50: 1}
    (issue,) = st._check_tensor("w", info)[1]
    assert issue.message == f"tensor 'w': keys missing [], unexpected ['{'y' * 36}...']"


def test_unhashable_dtype_is_an_unknown_dtype() -> None:
    assert _rules(_tensor(dtype=[1])) == [("safetensors.dtype", "tensor 'w': unknown dtype [1]")]


def test_shape_text_of_61_characters_is_cut() -> None:
    shape = [1] * 19 + [11]  # str() is 61 characters
    assert len(str(shape)) == 61
    assert st._shape(shape) == str(shape)[:57] + "...]"


@pytest.mark.parametrize(
    ("elements", "span", "ok"), [(2**60 + 1, 2**60 + 1, True), (2**60 + 1, 2**60, False)]
)
def test_sizes_past_2_pow_53_are_compared_exactly(elements: int, span: int, ok: bool) -> None:
    # integer arithmetic: a float division would round 2**60 + 1 to 2**60 and hide a one-byte lie
    issues = st._check_tensor("w", _tensor("U8", (elements,), (0, span)))[1]
    assert (issues == []) is ok
