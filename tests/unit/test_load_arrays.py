"""Planned views made arrays (``airlock._load.arrays``): zero-copy, byte swaps, torch's lazy bits.

Known answers, bit for bit, written out by hand (IEEE sign bits, two's complement) or computed by
numpy's own IEEE subtraction; every dtype's lazy-bit rule; the storage-level copy made once per
(storage, dtype, bits) and 64-byte aligned; zero-copy views over writable memory.
"""

from __future__ import annotations

import struct
import sys
import warnings
from typing import Any

import pytest

np = pytest.importorskip("numpy")

from airlock._load import arrays  # noqa: E402
from airlock._load.arrays import check_lazy_bits, raw_array, to_numpy, to_torch  # noqa: E402
from airlock._load.dtypes import DTYPES, DType  # noqa: E402
from airlock._load.model import Storage, TensorRef, contiguous_strides  # noqa: E402
from airlock.errors import FormatError, UsageError  # noqa: E402

NEG_OK = {"int8", "int16", "int32", "int64", "uint8", "float16", "bfloat16", "float32", "float64",
          "complex64", "complex128"}  # fmt: skip
CONJ_OK = {"complex32", "complex64", "complex128"}


def ref_over(
    data: bytes,
    dtype: str,
    shape: tuple[int, ...] | None = None,
    *,
    neg: bool = False,
    conj: bool = False,
    swap: int = 1,
    offset: int = 0,
    stride: tuple[int, ...] | None = None,
) -> TensorRef:
    d = DTYPES[dtype]
    shape = (len(data) // d.itemsize,) if shape is None else shape
    st = Storage("k", len(data), 0, (0, len(data)), swap, data)
    return TensorRef(st, d, offset, shape, stride or contiguous_strides(shape), neg=neg, conj=conj)


def words(arr: Any, size: int) -> list[int]:
    return [int(w) for w in np.ascontiguousarray(arr).view(np.dtype(f"<u{size}")).ravel()]


EMPTY = memoryview(b"")


# -- which lazy bits torch can resolve ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_lazy_bits_per_dtype(name: str) -> None:
    d = DTYPES[name]
    st = Storage("k", 0, 0, (0, 0))
    check_lazy_bits(TensorRef(st, d, 0, (0,), (1,)), "w")
    neg = TensorRef(st, d, 0, (0,), (1,), neg=True)
    conj = TensorRef(st, d, 0, (0,), (1,), conj=True)
    if name in NEG_OK:
        check_lazy_bits(neg, "w")
    else:
        with pytest.raises(FormatError) as info:
            check_lazy_bits(neg, "w")
        assert str(info.value) == f"w: a lazy negation on a {name} tensor (torch cannot resolve it either)"
    if name in CONJ_OK:
        check_lazy_bits(conj, "w")
    else:
        with pytest.raises(FormatError) as info:
            check_lazy_bits(conj, "w")
        assert str(info.value) == f"w: a lazy conjugation on a {name} tensor, which is not complex"


# -- zero copy, alignment, byte order -------------------------------------------------------------------


def test_native_view_is_zero_copy_over_the_mapping() -> None:
    mapping = bytearray(struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)) + b"tail"
    st = Storage("k", 16, 0, (0, 16))
    ref = TensorRef(st, DTYPES["float32"], 1, (2,), (2,))
    arr = to_numpy(ref, memoryview(mapping))
    assert arr.tolist() == [2.0, 4.0]
    mapping[4:8] = struct.pack("<f", 9.0)
    assert arr.tolist() == [9.0, 4.0]  # a view, not a copy


def test_storage_offset_into_the_mapping() -> None:
    mapping = memoryview(b"\xff" * 8 + struct.pack("<2h", 7, -7) + b"\xff" * 8)
    st = Storage("k", 4, 8, (8, 12))
    assert to_numpy(TensorRef(st, DTYPES["int16"], 0, (2,), (1,)), mapping).tolist() == [7, -7]


def test_storage_with_its_own_bytes_ignores_the_mapping() -> None:
    data = b"zz" + struct.pack("<2h", 3, 4) + b"zz"
    st = Storage("k", 4, 2, (0, 0), 1, data)
    assert to_numpy(TensorRef(st, DTYPES["int16"], 0, (2,), (1,)), memoryview(b"\x01" * 64)).tolist() == [
        3,
        4,
    ]


@pytest.mark.parametrize("start", [0, 1, 3, 8, 63, 64])
def test_align_copies_a_misaligned_storage_once(start: int) -> None:
    block = np.zeros(256, dtype=np.uint8)
    base = -block.ctypes.data % 64  # the first 64-byte boundary in the block
    payload = struct.pack("<4d", 1.0, -2.0, 3.5, 4.25)
    block[base + start : base + start + 32] = np.frombuffer(payload, dtype=np.uint8)
    mapping = memoryview(block)
    st = Storage("k", 32, base + start, (0, 32))
    ref = TensorRef(st, DTYPES["float64"], 0, (4,), (1,))
    cache: arrays.Prepared = {}
    arr = to_numpy(ref, mapping, cache, align=True)
    assert arr.tolist() == [1.0, -2.0, 3.5, 4.25]
    assert arr.ctypes.data % 64 == 0
    aligned = start % 64 == 0
    assert np.shares_memory(arr, block) is aligned
    assert len(cache) == (0 if aligned else 1)
    again = to_numpy(ref, mapping, cache, align=True)
    assert again.ctypes.data == arr.ctypes.data  # one copy per storage
    # without align: always the mapping itself
    assert np.shares_memory(to_numpy(ref, mapping, None), block)


def test_align_of_an_empty_storage_is_no_copy() -> None:
    st = Storage("k", 0, 3, (0, 0))
    ref = TensorRef(st, DTYPES["float32"], 0, (0,), (1,))
    cache: arrays.Prepared = {}
    assert to_numpy(ref, memoryview(bytes(16)), cache, align=True).shape == (0,)
    assert arrays._prepared(ref, memoryview(bytes(16)), cache, True).nbytes == 0
    assert cache == {}


@pytest.mark.parametrize(
    ("swap", "data", "expected"),
    [
        (2, bytes(range(8)), bytes([1, 0, 3, 2, 5, 4, 7, 6])),
        (4, bytes(range(8)), bytes([3, 2, 1, 0, 7, 6, 5, 4])),
        (8, bytes(range(8)), bytes([7, 6, 5, 4, 3, 2, 1, 0])),
        (4, bytes(range(10)), bytes([3, 2, 1, 0, 7, 6, 5, 4, 8, 9])),  # a partial unit stays as it is
        (4, bytes(range(3)), bytes(range(3))),
    ],
)
def test_storage_swapped_in_its_units(swap: int, data: bytes, expected: bytes) -> None:
    st = Storage("k", len(data), 0, (0, len(data)), swap, data)
    ref = TensorRef(st, DTYPES["uint8"], 0, (len(data),), (1,))
    cache: arrays.Prepared = {}
    out = raw_array(ref, EMPTY, cache)
    assert out.tobytes() == expected
    assert not np.shares_memory(out, np.frombuffer(data, dtype=np.uint8))
    assert list(cache) == [(id(st), "", False, False)]
    assert out.ctypes.data % 64 == 0


def test_swap_of_one_is_no_copy() -> None:
    data = bytearray(range(8))
    st = Storage("k", 8, 0, (0, 8), 1, bytes(data))
    ref = TensorRef(st, DTYPES["uint8"], 0, (8,), (1,))
    cache: arrays.Prepared = {}
    raw_array(ref, EMPTY, cache)
    assert cache == {}


# -- lazy negation and conjugation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "values", "negated"),
    [
        ("int8", [1, -2, 127, -128, 0], [-1, 2, -127, -128, 0]),
        ("uint8", [1, 255, 0, 128], [255, 1, 0, 128]),  # two's complement, as torch
        ("int16", [300, -32768, -1], [-300, -32768, 1]),
        ("int32", [2**31 - 1, -(2**31), 5], [-(2**31) + 1, -(2**31), -5]),
        ("int64", [2**63 - 1, -(2**63), -9], [-(2**63) + 1, -(2**63), 9]),
    ],
)
def test_negated_integers(dtype: str, values: list[int], negated: list[int]) -> None:
    code = {"int8": "b", "uint8": "B", "int16": "h", "int32": "i", "int64": "q"}[dtype]
    data = struct.pack(f"<{len(values)}{code}", *values)
    assert to_numpy(ref_over(data, dtype, neg=True), EMPTY).tolist() == negated
    assert to_numpy(ref_over(data, dtype), EMPTY).tolist() == values


@pytest.mark.parametrize(
    ("dtype", "size", "words_in", "words_out"),
    [
        ("float32", 4, [0x3F800000, 0x80000000, 0x00000000, 0x7F800000, 0x7FC00001, 0xFF800001],
                       [0xBF800000, 0x00000000, 0x80000000, 0xFF800000, 0xFFC00001, 0x7F800001]),
        ("float64", 8, [0x3FF0000000000000, 0x8000000000000000, 0x7FF0000000000001],
                       [0xBFF0000000000000, 0x0000000000000000, 0xFFF0000000000001]),
        ("float16", 2, [0x3C00, 0x8000, 0x7C00, 0xFC00, 0x0001], [0xBC00, 0x0000, 0xFC00, 0x7C00, 0x8001]),
        ("bfloat16", 2, [0x3F80, 0x8000, 0x7F80, 0x0001], [0xBF80, 0x0000, 0xFF80, 0x8001]),
    ],
)  # fmt: skip
def test_negated_floats_flip_the_sign_bit(
    dtype: str, size: int, words_in: list[int], words_out: list[int]
) -> None:
    data = struct.pack(f"<{len(words_in)}{'HIQ'[(size > 2) + (size > 4)]}", *words_in)
    assert words(raw_array(ref_over(data, dtype, neg=True), EMPTY), size) == words_out


@pytest.mark.parametrize(
    ("dtype", "nan"),
    [
        ("float16", 0x7C01),
        ("float16", 0xFE00),
        ("float16", 0x7FFF),
        ("bfloat16", 0x7F81),
        ("bfloat16", 0xFFC0),
    ],
)
def test_negated_half_precision_nan_is_refused(dtype: str, nan: int) -> None:
    data = struct.pack("<3H", 0x3C00, nan, 0)
    with pytest.raises(FormatError) as info:
        raw_array(ref_over(data, dtype, neg=True), EMPTY)
    assert str(info.value) == (
        f"tensor over storage 'k': a lazy negation or conjugation of {dtype} data holding NaNs; torch's "
        "result for those depends on its CPU kernel, so airlock refuses it"
    )


@pytest.mark.parametrize(("dtype", "inf"), [("float16", 0x7C00), ("bfloat16", 0x7F80)])
def test_negated_half_precision_infinity_is_a_sign_flip(dtype: str, inf: int) -> None:
    data = struct.pack("<2H", inf, inf | 0x8000)
    assert words(raw_array(ref_over(data, dtype, neg=True), EMPTY), 2) == [inf | 0x8000, inf]


def _c64(*parts: int) -> bytes:
    return struct.pack(f"<{len(parts)}I", *parts)


ONE, TWO, THREE = 0x3F800000, 0x40000000, 0x40400000
SIGN = 0x80000000


@pytest.mark.parametrize(
    ("neg", "conj", "expected"),
    [
        (True, False, [ONE | SIGN, TWO, THREE | SIGN, ONE]),  # -z: both parts flipped
        (False, True, [ONE, TWO, THREE, ONE]),  # conj: imaginary part flipped
        (True, True, [ONE | SIGN, TWO | SIGN, THREE | SIGN, ONE | SIGN]),  # conj(0 - z)
        (False, False, [ONE, TWO | SIGN, THREE, ONE | SIGN]),
    ],
)
def test_complex64_lazy_bits(neg: bool, conj: bool, expected: list[int]) -> None:
    data = _c64(ONE, TWO | SIGN, THREE, ONE | SIGN)  # (1 - 2j), (3 - 1j)
    out = raw_array(ref_over(data, "complex64", neg=neg, conj=conj), EMPTY)
    assert words(out, 4) == expected


def test_complex128_negation_and_conjugation() -> None:
    one, two = 0x3FF0000000000000, 0x4000000000000000
    s = 1 << 63
    data = struct.pack("<4Q", one, two, two | s, one)
    assert words(raw_array(ref_over(data, "complex128", neg=True), EMPTY), 8) == [
        one | s,
        two | s,
        two,
        one | s,
    ]
    assert words(raw_array(ref_over(data, "complex128", conj=True), EMPTY), 8) == [
        one,
        two | s,
        two | s,
        one | s,
    ]
    both = raw_array(ref_over(data, "complex128", neg=True, conj=True), EMPTY)
    assert words(both, 8) == [one | s, two, two, one]


def test_complex32_conjugation_flips_the_imaginary_half() -> None:
    data = struct.pack("<4H", 0x3C00, 0x4000, 0xBC00, 0x8001)
    out = raw_array(ref_over(data, "complex32", conj=True), EMPTY)
    assert words(out, 2) == [0x3C00, 0xC000, 0xBC00, 0x0001]
    with pytest.raises(FormatError, match="holding NaNs"):
        raw_array(ref_over(struct.pack("<2H", 0x3C00, 0x7E00), "complex32", conj=True), EMPTY)
    assert words(
        raw_array(ref_over(struct.pack("<2H", 0x7E00, 0x3C00), "complex32", conj=True), EMPTY), 2
    ) == [
        0x7E00,
        0xBC00,
    ]  # a NaN in the real half is left alone by conj


@pytest.mark.parametrize(
    ("dtype", "part"),
    [
        ("complex64", 0x7FC00000), ("complex64", 0xFF800001), ("complex64", 0), ("complex64", SIGN),
        ("complex128", 0x7FF8000000000000), ("complex128", 0), ("complex128", 1 << 63),
        ("complex128", 0xFFF0000000000001),
    ],
)  # fmt: skip
@pytest.mark.parametrize("conj", [False, True])
@pytest.mark.parametrize("slot", [0, 1, 3])
def test_complex_negation_with_nan_or_zero_parts_is_refused(
    dtype: str, part: int, conj: bool, slot: int
) -> None:
    size = 4 if dtype == "complex64" else 8
    one = 0x3F800000 if size == 4 else 0x3FF0000000000000
    parts = [one] * 4
    parts[slot] = part
    data = struct.pack(f"<4{'I' if size == 4 else 'Q'}", *parts)
    with pytest.raises(FormatError) as info:
        raw_array(ref_over(data, dtype, neg=True, conj=conj), EMPTY)
    assert str(info.value) == (
        f"tensor over storage 'k': a lazy negation on {dtype} data holding NaN or signed zero parts; "
        "torch's result for those depends on its CPU kernel, so airlock refuses it"
    )
    # conjugation alone is a plain sign flip of the imaginary part, NaN and zero included
    out = raw_array(ref_over(data, dtype, conj=True), EMPTY)
    sign = 1 << (8 * size - 1)
    assert words(out, size) == [p ^ sign if i % 2 else p for i, p in enumerate(parts)]


@pytest.mark.parametrize(
    ("size", "near"),
    [(4, [0x7F800000, 0xFF800000, 0x00000001, 0x80000001, 0x7F7FFFFF]),
     (8, [0x7FF0000000000000, 0x0000000000000001, 0x8000000000000001, 0xFFF0000000000000])],
)  # fmt: skip
def test_infinities_and_subnormals_are_not_nan_or_zero(size: int, near: list[int]) -> None:
    w = np.array(near, dtype=np.dtype(f"<u{size}"))
    assert arrays._has_nan_or_zero(w) is False
    for extra in ([0], [1 << (8 * size - 1)], [0x7FC00000 if size == 4 else 0x7FF8000000000000]):
        assert arrays._has_nan_or_zero(np.array(near + extra, dtype=np.dtype(f"<u{size}"))) is True


@pytest.mark.parametrize("size", [4, 8])
def test_subtract_from_zero_is_ieee_subtraction(size: int) -> None:
    """``0.0 - x`` bit for bit as the CPU computes it (numpy's subtraction): NaNs quieted with their
    sign kept, both zeros become +0, everything else a sign flip."""
    if size == 4:
        special = [0x7F800001, 0xFF800001, 0x7FC00000, 0xFFC12345, 0x80000000, 0, 0x3F800000, 0xFF800000, 1]
        float_type = np.float32
    else:
        special = [0x7FF0000000000001, 0xFFF0000000000001, 0x7FF8000000000000, 1 << 63, 0,
                   0x3FF0000000000000, 0xFFF0000000000000, 1]  # fmt: skip
        float_type = np.float64
    w = np.array(special, dtype=np.dtype(f"<u{size}"))
    with np.errstate(invalid="ignore"):
        expected = (float_type(0) - w.view(float_type)).view(w.dtype).tolist()
    arrays._subtract_from_zero(w)
    assert w.tolist() == expected


def test_partial_element_at_the_end_of_a_storage_is_left_alone() -> None:
    data = struct.pack("<2f", 1.0, 2.0) + b"\x01\x02\x03"
    st = Storage("k", len(data), 0, (0, len(data)), 1, data)
    ref = TensorRef(st, DTYPES["float32"], 0, (2,), (1,), neg=True)
    cache: arrays.Prepared = {}
    assert to_numpy(ref, EMPTY, cache).tolist() == [-1.0, -2.0]
    assert bytes(next(iter(cache.values()))[8:]) == b"\x01\x02\x03"


def test_refused_bits_before_any_copy() -> None:
    data = bytes(4)
    st = Storage("k", 4, 0, (0, 4), 1, data)
    with pytest.raises(
        FormatError, match=r"^tensor over storage 'k': a lazy conjugation on a float32 tensor"
    ):
        raw_array(TensorRef(st, DTYPES["float32"], 0, (1,), (1,), conj=True), EMPTY)


def test_one_copy_per_storage_dtype_and_bits() -> None:
    data = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    st = Storage("k", 16, 0, (0, 16), 1, data)
    f32 = DTYPES["float32"]
    cache: arrays.Prepared = {}
    a = raw_array(TensorRef(st, f32, 0, (2,), (1,), neg=True), EMPTY, cache)
    b = raw_array(TensorRef(st, f32, 2, (2,), (1,), neg=True), EMPTY, cache)
    assert b.ctypes.data == a.ctypes.data + 8 and len(cache) == 1  # one copy, two views
    i32 = raw_array(TensorRef(st, DTYPES["int32"], 0, (4,), (1,), neg=True), EMPTY, cache)
    assert len(cache) == 2 and not np.shares_memory(a, i32)
    assert set(cache) == {(id(st), "float32", True, False), (id(st), "int32", True, False)}
    assert to_numpy(TensorRef(st, f32, 0, (4,), (1,), neg=True), EMPTY, cache).tolist() == [-1, -2, -3, -4]
    # without a cache each call makes its own copy
    c = raw_array(TensorRef(st, f32, 0, (2,), (1,), neg=True), EMPTY, None)
    assert c.ctypes.data != a.ctypes.data


def test_swapped_and_negated_is_swapped_first() -> None:
    data = struct.pack(">2f", 1.0, -2.5)
    st = Storage("k", 8, 0, (0, 8), 4, data)
    ref = TensorRef(st, DTYPES["float32"], 0, (2,), (1,), neg=True)
    assert to_numpy(ref, EMPTY).tolist() == [-1.0, 2.5]


# -- raw arrays and strides -------------------------------------------------------------------------------


def test_raw_array_offset_and_strides_in_elements() -> None:
    data = struct.pack("<6h", 0, 1, 2, 3, 4, 5)
    st = Storage("k", 12, 0, (0, 12), 1, data)
    ref = TensorRef(st, DTYPES["int16"], 1, (2, 2), (2, 1))
    out = raw_array(ref, EMPTY)
    assert out.dtype == np.dtype("<u2")
    assert out.tolist() == [[1, 2], [3, 4]]
    assert to_numpy(TensorRef(st, DTYPES["int16"], 0, (3,), (2,)), EMPTY).tolist() == [0, 2, 4]


@pytest.mark.parametrize(("dtype", "carrier"), [("float16", "<u2"), ("complex128", "|V16"), ("bool", "|u1")])
def test_empty_tensor_is_zeros_of_its_shape(dtype: str, carrier: str) -> None:
    st = Storage("k", 0, 0, (0, 0), 1, b"")
    out = raw_array(TensorRef(st, DTYPES[dtype], 0, (3, 0, 2), (0, 2, 1)), EMPTY)
    assert out.shape == (3, 0, 2)
    assert out.dtype == np.dtype(carrier)


# -- torch ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("dtype", "data", "values"),
    [
        ("float32", struct.pack("<3f", 1.5, -2.0, 0.25), [1.5, -2.0, 0.25]),
        ("int64", struct.pack("<2q", -(2**62), 7), [-(2**62), 7]),
        ("bfloat16", struct.pack("<2H", 0x3FC0, 0xC000), [1.5, -2.0]),  # the ml_dtypes path
        ("float8_e4m3fn", bytes([0x38, 0xB8]), [1.0, -1.0]),
    ],
)
def test_to_torch_values(torch: Any, dtype: str, data: bytes, values: list[float]) -> None:
    st = Storage("k", len(data), 0, (0, len(data)), 1, data)
    ref = TensorRef(st, DTYPES[dtype], 0, (len(values),), (1,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read-only buffer handed to torch warns: it must be copied
        t = to_torch(ref, EMPTY)
    assert t.dtype == getattr(torch, dtype)
    assert t.float().tolist() == values


def test_to_torch_complex32_and_negated(torch: Any) -> None:
    data = struct.pack("<4H", 0x3C00, 0x4000, 0xBC00, 0x0000)  # (1 + 2j), (-1 + 0j)
    st = Storage("k", 8, 0, (0, 8), 1, data)
    t = to_torch(TensorRef(st, DTYPES["complex32"], 0, (2,), (1,)), EMPTY)
    assert t.dtype == torch.complex32
    assert t.to(torch.complex64).tolist() == [1 + 2j, -1 + 0j]
    f = to_torch(TensorRef(st, DTYPES["float16"], 0, (4,), (1,), neg=True), EMPTY)
    assert f.tolist() == [-1.0, -2.0, 1.0, -0.0]


def test_to_torch_is_zero_copy_over_writable_aligned_memory(torch: Any) -> None:
    block = np.zeros(128, dtype=np.uint8)
    start = -block.ctypes.data % 64
    block[start : start + 8] = np.frombuffer(struct.pack("<2f", 1.0, 2.0), dtype=np.uint8)
    st = Storage("k", 8, start, (0, 8))
    t = to_torch(TensorRef(st, DTYPES["float32"], 0, (2,), (1,)), memoryview(block))
    block[start : start + 4] = np.frombuffer(struct.pack("<f", 5.0), dtype=np.uint8)
    assert t.tolist() == [5.0, 2.0]
    b16 = to_torch(TensorRef(st, DTYPES["bfloat16"], 0, (4,), (1,)), memoryview(block))
    block[start + 6 : start + 8] = np.frombuffer(struct.pack("<H", 0x3F80), dtype=np.uint8)
    assert b16[3].item() == 1.0


def test_to_torch_refusals(torch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    st = Storage("k", 16, 0, (0, 16), 1, bytes(16))
    nameless = DType("no_such_dtype", 4, 4, "<u4", None)
    with pytest.raises(FormatError, match=r"^dtype no_such_dtype has no torch equivalent$"):
        to_torch(TensorRef(st, nameless, 0, (1,), (1,)), EMPTY)
    wide = DType("complex128", 16, 8, None, None)  # no numpy type and no unsigned carrier
    with pytest.raises(FormatError, match=r"^dtype complex128 cannot be handed to torch$"):
        to_torch(TensorRef(st, wide, 0, (1,), (1,)), EMPTY)
    not_a_dtype = DType("Tensor", 4, 4, "<u4", None)  # torch.Tensor exists, but is no dtype
    with pytest.raises(FormatError, match=r"^dtype Tensor has no torch equivalent$"):
        to_torch(TensorRef(st, not_a_dtype, 0, (1,), (1,)), EMPTY)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(
        UsageError, match=r"^framework='pt' needs torch \(pip install 'model-airlock\[torch\]'\)$"
    ):
        to_torch(TensorRef(st, DTYPES["float32"], 0, (1,), (1,)), EMPTY)


def _aligned_block(payload: bytes, start: int, writeable: bool) -> tuple[Any, memoryview, int]:
    block = np.zeros(256, dtype=np.uint8)
    base = -block.ctypes.data % 64 + start
    block[base : base + len(payload)] = np.frombuffer(payload, dtype=np.uint8)
    block.flags.writeable = writeable
    return block, memoryview(block), base


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_to_torch_copies_read_only_memory_without_a_warning(torch: Any, dtype: str) -> None:
    block, mapping, base = _aligned_block(struct.pack("<4H", 0x3F80, 0, 0x4000, 0), 0, writeable=False)
    st = Storage("k", 8, base, (0, 8))
    ref = TensorRef(st, DTYPES[dtype], 0, (8 // DTYPES[dtype].itemsize,), (1,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when handed a read-only array
        t = to_torch(ref, mapping)
    assert t.data_ptr() != block.ctypes.data + base  # a copy
    assert t.dtype == getattr(torch, dtype)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("start", [4, 8, 32])
def test_to_torch_realigns_a_misaligned_storage(torch: Any, dtype: str, start: int) -> None:
    _block, mapping, base = _aligned_block(
        struct.pack("<4H", 0x3F80, 0x3F80, 0x4000, 0x4000), start, writeable=True
    )
    st = Storage("k", 8, base, (0, 8))
    ref = TensorRef(st, DTYPES[dtype], 0, (8 // DTYPES[dtype].itemsize,), (1,))
    cache: arrays.Prepared = {}
    t = to_torch(ref, mapping, cache)
    assert t.data_ptr() % 64 == 0
    assert len(cache) == 1  # the realigned copy is kept for the next tensor over the storage
    again = to_torch(ref, mapping, cache)
    assert again.data_ptr() == t.data_ptr()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_to_torch_shares_one_transformed_copy(torch: Any, dtype: str) -> None:
    data = struct.pack("<4H", 0x3F80, 0x3F80, 0x4000, 0x4000)
    st = Storage("k", 8, 0, (0, 8), 1, data)
    n = 8 // DTYPES[dtype].itemsize
    cache: arrays.Prepared = {}
    first = to_torch(TensorRef(st, DTYPES[dtype], 0, (n,), (1,), neg=True), EMPTY, cache)
    second = to_torch(TensorRef(st, DTYPES[dtype], 0, (n,), (1,), neg=True), EMPTY, cache)
    assert first.data_ptr() == second.data_ptr() and len(cache) == 1


@pytest.mark.parametrize("nbytes", [1, 2])
def test_align_holds_for_the_smallest_storages(nbytes: int) -> None:
    block = np.zeros(256, dtype=np.uint8)
    base = -block.ctypes.data % 64 + 1  # one byte past a boundary
    block[base : base + nbytes] = 7
    st = Storage("k", nbytes, base, (0, nbytes))
    out = to_numpy(TensorRef(st, DTYPES["uint8"], 0, (nbytes,), (1,)), memoryview(block), None, align=True)
    assert out.tolist() == [7] * nbytes
    assert out.ctypes.data % 64 == 0


def test_raw_array_does_not_realign_unless_asked() -> None:
    block = np.zeros(128, dtype=np.uint8)
    base = -block.ctypes.data % 64 + 3
    st = Storage("k", 8, base, (0, 8))
    out = raw_array(TensorRef(st, DTYPES["uint16"], 0, (4,), (1,)), memoryview(block))
    assert np.shares_memory(out, block)  # a view of the mapping, misaligned as it is
