"""The loader's view planning (``airlock._load.model``): every bound of ``check_view`` at N-1, N, N+1.

A tensor view comes from the pickle (hostile): its size, stride and offset are proven to lie
inside the storage's bytes before any array is made. Exact error types and messages.
"""

from __future__ import annotations

import contextlib

import pytest

from airlock._load.dtypes import DTYPES
from airlock._load.model import (
    MAX_DIMS,
    MAX_LOGICAL_BYTES,
    Storage,
    TensorRef,
    check_view,
    contiguous_strides,
)
from airlock.errors import FormatError, LimitError

F32 = DTYPES["float32"]
U8 = DTYPES["uint8"]


def storage(nbytes: int) -> Storage:
    return Storage("s0", nbytes, 0, (0, nbytes))


def test_limits() -> None:
    assert MAX_DIMS == 64
    assert MAX_LOGICAL_BYTES == 2**63 - 1


def test_storage_defaults() -> None:
    st = Storage("k", 8, 16, (16, 24))
    assert (st.swap, st.data) == (1, None)


@pytest.mark.parametrize(
    ("shape", "strides"),
    [
        ((), ()),
        ((5,), (1,)),
        ((2, 3, 4), (12, 4, 1)),
        ((2, 0, 4), (4, 4, 1)),  # an empty dimension counts as 1
        ((0,), (1,)),
        ((3, 1, 2), (2, 2, 1)),
    ],
)
def test_contiguous_strides(shape: tuple[int, ...], strides: tuple[int, ...]) -> None:
    assert contiguous_strides(shape) == strides


@pytest.mark.parametrize(
    ("shape", "stride", "offset", "span", "numel"),
    [
        ((), (), 0, (0, 4), 1),
        ((), (), 3, (12, 16), 1),
        ((4,), (1,), 0, (0, 16), 4),
        ((4,), (2,), 1, (4, 32), 4),
        ((2, 3), (3, 1), 2, (8, 32), 6),
        ((2, 3), (0, 0), 5, (20, 24), 6),  # stride 0: one element, viewed 6 times
        ((0, 3), (3, 1), 7, None, 0),
        ((3, 0), (1, 1), 0, None, 0),
    ],
)
def test_byte_span_and_sizes(
    shape: tuple[int, ...], stride: tuple[int, ...], offset: int, span: tuple[int, int] | None, numel: int
) -> None:
    ref = TensorRef(storage(1000), F32, offset, shape, stride)
    assert ref.byte_span() == span
    assert ref.numel == numel
    assert ref.nbytes == numel * 4
    assert (ref.neg, ref.conj, ref.quantized) == (False, False, None)


@pytest.mark.parametrize(
    ("shape", "stride", "contiguous"),
    [
        ((2, 3), (3, 1), True),
        ((2, 3), (1, 2), False),
        ((2, 3), (3, 2), False),
        ((1, 3), (99, 1), True),  # a dimension of 1 may have any stride
        ((2, 1), (1, 7), True),
        ((0, 3), (5, 5), True),  # empty: contiguous whatever the strides
        ((3,), (0,), False),
        ((), (), True),
    ],
)
def test_is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...], contiguous: bool) -> None:
    assert TensorRef(storage(1000), F32, 0, shape, stride).is_contiguous() is contiguous


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_view_reaching_the_end_of_its_storage(delta: int) -> None:
    # (2, 3) float32 at offset 2: bytes 8 .. 32
    st = storage(32 + delta)
    if delta >= 0:
        ref = check_view("t", st, F32, 2, (2, 3), (3, 1))
        assert (ref.storage, ref.dtype, ref.offset, ref.shape, ref.stride) == (st, F32, 2, (2, 3), (3, 1))
    else:
        with pytest.raises(FormatError) as info:
            check_view("t", st, F32, 2, (2, 3), (3, 1))
        assert str(info.value) == (
            "tensor t: view (offset 2, size (2, 3), stride (3, 1), float32) reaches byte 32 of a storage of 31 bytes"
        )


def test_empty_views_need_no_bytes() -> None:
    ref = check_view("t", storage(0), F32, 10**6, (0, 5), (5, 1))
    assert ref.numel == 0


def test_stride_zero_is_bounded_by_the_bytes_viewed() -> None:
    ref = check_view("t", storage(4), F32, 0, (2**20, 2**20), (0, 0))
    assert ref.byte_span() == (0, 4)


@pytest.mark.parametrize("dims", [MAX_DIMS - 1, MAX_DIMS, MAX_DIMS + 1])
def test_dimension_limit(dims: int) -> None:
    shape = (1,) * dims
    if dims <= MAX_DIMS:
        assert check_view("t", storage(4), F32, 0, shape, shape).shape == shape
    else:
        with pytest.raises(LimitError) as info:
            check_view("t", storage(4), F32, 0, shape, shape)
        assert str(info.value) == "tensor t: 65 dimensions, more than torch's 64"


@pytest.mark.parametrize(
    ("dtype", "elements", "ok"),
    [
        ("uint8", MAX_LOGICAL_BYTES, True),
        ("uint8", MAX_LOGICAL_BYTES + 1, False),
        ("float32", (MAX_LOGICAL_BYTES + 1) // 4 - 1, True),
        ("float32", (MAX_LOGICAL_BYTES + 1) // 4, False),
        ("complex128", (MAX_LOGICAL_BYTES + 1) // 16, False),
    ],
)
def test_logical_size_limit(dtype: str, elements: int, ok: bool) -> None:
    d = DTYPES[dtype]
    if ok:
        ref = check_view("t", storage(d.itemsize), d, 0, (elements,), (0,))
        assert ref.nbytes == elements * d.itemsize
    else:
        with pytest.raises(LimitError) as info:
            check_view("t", storage(d.itemsize), d, 0, (elements,), (0,))
        assert str(info.value) == (
            f"tensor t: size ({elements},) of {d.name} is {elements * d.itemsize} bytes, more than a 64-bit "
            "size can hold (torch refuses it too)"
        )


@pytest.mark.parametrize(
    ("offset", "stride", "ok"),
    [
        (MAX_LOGICAL_BYTES, (1,), True),
        (MAX_LOGICAL_BYTES + 1, (1,), False),
        (0, (MAX_LOGICAL_BYTES,), True),
        (0, (MAX_LOGICAL_BYTES + 1,), False),
        (0, (1, MAX_LOGICAL_BYTES + 1), False),
    ],
)
def test_offset_and_stride_must_fit_64_bits(offset: int, stride: tuple[int, ...], ok: bool) -> None:
    # a size of 1 (or 0 elements) so only the offset/stride bound can refuse; the span check then
    # fails for the huge offset, with a FormatError, which is what "ok" means here
    shape = (1,) * len(stride)
    if ok:
        with pytest.raises(FormatError, match="reaches byte") if offset else contextlib.nullcontext():
            check_view("t", storage(4), U8, offset, shape, stride)
    else:
        with pytest.raises(LimitError) as info:
            check_view("t", storage(4), U8, offset, shape, stride)
        assert str(info.value) == "tensor t: storage offset or stride does not fit a 64-bit integer"


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([2, 3], "tensor t: size [2, 3] is not a tuple of non-negative integers"),
        ((2, -1), "tensor t: size (2, -1) is not a tuple of non-negative integers"),
        ((2, True), "tensor t: size (2, True) is not a tuple of non-negative integers"),
        ((2, 3.0), "tensor t: size (2, 3.0) is not a tuple of non-negative integers"),
        ((2, "3"), "tensor t: size (2, '3') is not a tuple of non-negative integers"),
        (None, "tensor t: size None is not a tuple of non-negative integers"),
        (tuple(range(100)), "tensor t: size " + repr(tuple(range(100)))[:80] + " is not a tuple"),
    ],
)
def test_bad_sizes(shape: object, message: str) -> None:
    bad = shape if shape != tuple(range(100)) else (*range(99), -1)
    if shape == tuple(range(100)):
        message = "tensor t: size " + repr(bad)[:80] + " is not a tuple of non-negative integers"
    with pytest.raises(FormatError) as info:
        check_view("t", storage(100), U8, 0, bad, (1, 1))
    assert str(info.value) == message
    assert type(info.value) is FormatError


@pytest.mark.parametrize(
    ("stride", "message"),
    [
        ([1, 1], "tensor t: stride [1, 1] is not a tuple of non-negative integers"),
        ((1, -1), "tensor t: stride (1, -1) is not a tuple of non-negative integers"),
        ((1, False), "tensor t: stride (1, False) is not a tuple of non-negative integers"),
        ((*range(99), -2), "tensor t: stride " + repr((*range(99), -2))[:80] + " is not a tuple of non-negative integers"),
    ],
)  # fmt: skip
def test_bad_strides(stride: object, message: str) -> None:
    with pytest.raises(FormatError) as info:
        check_view("t", storage(100), U8, 0, (1, 1), stride)
    assert str(info.value) == message
    assert type(info.value) is FormatError


def test_rank_mismatch() -> None:
    with pytest.raises(FormatError) as info:
        check_view("t", storage(100), U8, 0, (1, 1), (1,))
    assert str(info.value) == "tensor t: size has 2 dimensions, stride has 1"


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (-1, "-1"),
        (1.0, "1.0"),
        (True, "True"),
        ("0", "'0'"),
        (None, "None"),
        ("x" * 100, repr("x" * 100)[:40]),
    ],
)
def test_bad_offsets(offset: object, text: str) -> None:
    with pytest.raises(FormatError) as info:
        check_view("t", storage(100), U8, offset, (1,), (1,))
    assert str(info.value) == f"tensor t: storage offset {text} is not a non-negative integer"


def test_zero_offset_and_zero_sizes_are_indices() -> None:
    ref = check_view("t", storage(0), U8, 0, (0,), (0,))
    assert (ref.offset, ref.shape, ref.stride) == (0, (0,), (0,))


def test_a_ref_whose_stride_does_not_match_its_size_is_a_bug_not_a_shorter_view() -> None:
    """check_view refuses such a view; a TensorRef made directly with one fails loudly (strict zip)."""
    ref = TensorRef(storage(100), F32, 0, (2, 3), (1,))
    with pytest.raises(ValueError, match="zip"):
        ref.byte_span()
    with pytest.raises(ValueError, match="zip"):
        TensorRef(storage(100), F32, 0, (1, 3), (5,)).is_contiguous()  # not "contiguous" on the first dim
