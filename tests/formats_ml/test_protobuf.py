"""The wire-format reader: every length and varint bounded, malformed input is a FormatError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock._formats import protobuf as pb
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS
from tests.formats_ml.tfgen import varint


def test_fields_of_each_wire_type() -> None:
    data = (
        varint(1 << 3 | 0) + varint(300)
        + varint(2 << 3 | 2) + varint(3) + b"abc"
        + varint(3 << 3 | 5) + b"\x01\x00\x00\x00"
        + varint(4 << 3 | 1) + b"\x02" + b"\x00" * 7
    )  # fmt: skip
    fields = list(pb.iter_fields(data, 0, len(data)))
    assert [(f.number, f.wire, f.value) for f in fields] == [(1, 0, 300), (2, 2, 3), (3, 5, 1), (4, 1, 2)]
    assert data[fields[1].start : fields[1].end] == b"abc"
    assert pb.text(data, fields[1], "name") == "abc"


def test_length_past_the_message_is_rejected_before_use() -> None:
    data = varint(2 << 3 | 2) + varint(1 << 40) + b"abc"
    with pytest.raises(
        FormatError, match=r"field 2 at offset 0 declares 1099511627776 bytes but only 3 remain"
    ):
        list(pb.iter_fields(data, 0, len(data)))


def test_nested_window_is_bounded_by_its_parent() -> None:
    # an inner length that fits the buffer but not the enclosing message
    inner = varint(1 << 3 | 2) + varint(10) + b"x" * 10
    data = varint(1 << 3 | 2) + varint(4) + inner
    outer = next(pb.iter_fields(data, 0, len(data)))
    with pytest.raises(FormatError, match="declares 10 bytes but only 2 remain"):
        list(pb.iter_fields(data, outer.start, outer.end))


def test_varint_longer_than_ten_bytes() -> None:
    with pytest.raises(FormatError, match="longer than 10 bytes"):
        pb.read_varint(b"\xff" * 11 + b"\x01", 0, 12)


def test_varint_over_64_bits() -> None:
    with pytest.raises(FormatError, match="does not fit in 64 bits"):
        pb.read_varint(b"\xff" * 9 + b"\x7f", 0, 10)


def test_truncated_varint() -> None:
    with pytest.raises(FormatError, match="runs past the end"):
        pb.read_varint(b"\x80\x80", 0, 2)


@pytest.mark.parametrize(
    ("tag", "message"),
    [(1 << 3 | 3, "wire type 3"), (1 << 3 | 7, "wire type 7"), (0 << 3 | 0, "field number 0")],
)
def test_groups_bad_wire_types_and_field_zero(tag: int, message: str) -> None:
    data = varint(tag) + b"\x00"
    with pytest.raises(FormatError, match=message):
        list(pb.iter_fields(data, 0, len(data)))


def test_fixed_width_past_the_end() -> None:
    data = varint(1 << 3 | 1) + b"\x00\x00"
    with pytest.raises(FormatError, match="64-bit field 1 at offset 0 runs past the end"):
        list(pb.iter_fields(data, 0, len(data)))


def test_text_must_be_utf8() -> None:
    data = varint(1 << 3 | 2) + b"\x02\xff\xfe"
    field = next(pb.iter_fields(data, 0, len(data)))
    with pytest.raises(FormatError, match="not valid UTF-8"):
        pb.text(data, field, "tensor name")


def test_depth_limit() -> None:
    limits = DEFAULT_LIMITS.replace(max_protobuf_depth=3)
    assert pb.enter(2, limits, 0) == 3
    with pytest.raises(LimitError, match="deeper than 3 levels at offset 7"):
        pb.enter(3, limits, 7)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_format_error(data: bytes) -> None:
    try:
        for f in pb.iter_fields(data, 0, len(data)):
            assert 0 <= f.offset < f.end <= len(data) or f.start == f.end <= len(data)
            assert f.start <= f.end <= len(data)
    except FormatError:
        pass
