"""safetensors header checks as tables: each tensor rule with its exact id, message and offset,
sizes at N-1/N/N+1 (including the 2**64-element bound), layouts that tile, overlap, leave gaps or
run past the data region, and the helpers that write the messages.
"""

from __future__ import annotations

from typing import Any

import pytest

from airlock._formats import safetensors as st
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
