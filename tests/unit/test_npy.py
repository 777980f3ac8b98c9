"""The npy reader rule by rule, on headers built byte by byte (no numpy): every size check at N-1, N
and N+1, every version, every dtype table entry with its near misses, and the exact error each
refusal raises (message and offset), so that a bound moved by one or a message lost is caught.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from airlock._formats.base import Issue, PickleStream, ReadContext
from airlock._formats.npy import NpyReader, dtype_info
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Severity

CTX = ReadContext(limits=DEFAULT_LIMITS, file_path=Path("x.npy"), root=Path())


def _read(raw: bytes, max_header: int | None = None) -> list[object]:
    ctx = (
        CTX
        if max_header is None
        else CTX._replace(limits=DEFAULT_LIMITS.replace(max_header_bytes=max_header))
    )
    return list(NpyReader().read(memoryview(raw), ctx))


def _npy(header: str | bytes, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    text = header.encode("latin-1") if isinstance(header, str) else header
    length = struct.pack("<H", len(text)) if version[0] == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text + data


def _hdr(descr: str = "'<i4'", shape: str = "(2,)", fortran: str = "False") -> str:
    return f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}}}"


def _error(raw: bytes, max_header: int | None = None) -> FormatError:
    with pytest.raises(FormatError) as info:
        _read(raw, max_header)
    assert not isinstance(info.value, LimitError)
    return info.value


# -- the file header -------------------------------------------------------------------------------


def test_sniff_needs_the_whole_magic() -> None:
    assert NpyReader().sniff(b"\x93NUMPY\x01\x00", 10)
    assert not NpyReader().sniff(b"\x93NUMP", 5)
    assert not NpyReader().sniff(b"\x93numpy\x01\x00", 10)
    assert NpyReader().name == "npy"


@pytest.mark.parametrize("size", [0, 8, 9])
def test_shorter_than_ten_bytes(size: int) -> None:
    raw = (b"\x93NUMPY\x01\x00\x00\x00")[:size]
    error = _error(raw)
    assert str(error) == f"{size}-byte file is too short for an npy header (at least 10 bytes)"


def test_ten_bytes_reach_the_header_parser() -> None:
    # the 10-byte minimum is exactly the 1.0 prologue: an empty header is then a literal error
    error = _error(b"\x93NUMPY\x01\x00\x00\x00")
    assert "too short" not in str(error)


@pytest.mark.parametrize("version", [(0, 0), (1, 1), (2, 1), (3, 1), (4, 0), (0, 1), (255, 255)])
def test_unknown_versions(version: tuple[int, int]) -> None:
    error = _error(_npy(_hdr(), b"\0" * 8, version))
    assert str(error) == f"npy format version {version[0]}.{version[1]} is not 1.0, 2.0 or 3.0"
    assert error.offset == 6


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_every_known_version_reads_its_length_field(version: tuple[int, int]) -> None:
    assert _read(_npy(_hdr(), b"\0" * 8, version)) == []


@pytest.mark.parametrize("major", [2, 3])
@pytest.mark.parametrize("size", [10, 11])
def test_version_2_and_3_need_twelve_bytes(major: int, size: int) -> None:
    raw = (b"\x93NUMPY" + bytes((major, 0)) + b"\0\0\0\0")[:size]
    error = _error(raw)
    assert str(error) == f"{size}-byte file is too short for an npy {major}.0 header (12 bytes)"


@pytest.mark.parametrize("major", [2, 3])
def test_twelve_bytes_reach_the_header_parser(major: int) -> None:
    error = _error(b"\x93NUMPY" + bytes((major, 0)) + b"\0\0\0\0")
    assert "too short" not in str(error)


def test_version_1_length_is_two_bytes_little_endian() -> None:
    header = _hdr().encode()
    # a 4-byte field read in a 1.0 file would take the header's first two bytes as its high half
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 8
    assert _read(raw) == []
    big = b"\x93NUMPY\x01\x00" + struct.pack(">H", len(header)) + header + b"\0" * 8
    assert "runs past the end" in str(_error(big))


def test_version_2_length_is_four_bytes_little_endian() -> None:
    header = _hdr().encode()
    raw = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header + b"\0" * 8
    assert _read(raw) == []
    big = b"\x93NUMPY\x02\x00" + struct.pack(">I", len(header)) + header + b"\0" * 8
    assert isinstance(_error(big, max_header=1 << 40), FormatError)


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_header_length_limit_at_n_minus_1_n_n_plus_1(version: tuple[int, int]) -> None:
    header = _hdr()
    raw = _npy(header, b"\0" * 8, version)
    n = len(header)
    assert _read(raw, max_header=n) == []
    assert _read(raw, max_header=n + 1) == []
    with pytest.raises(LimitError) as info:
        _read(raw, max_header=n - 1)
    assert str(info.value) == f"npy header length {n} exceeds {n - 1} (limit max_header_bytes)"
    assert info.value.offset == 8


@pytest.mark.parametrize("hlen", [2**31, 2**32 - 1])
def test_version_2_length_is_unsigned(hlen: int) -> None:
    raw = b"\x93NUMPY\x02\x00" + struct.pack("<I", hlen) + _hdr().encode() + b"\0" * 8
    with pytest.raises(LimitError) as info:
        _read(raw)
    assert (
        str(info.value)
        == f"npy header length {hlen} exceeds {DEFAULT_LIMITS.max_header_bytes} (limit max_header_bytes)"
    )


@pytest.mark.parametrize(("version", "start"), [((1, 0), 10), ((2, 0), 12)])
def test_header_length_at_the_end_of_the_file(version: tuple[int, int], start: int) -> None:
    header = _hdr(shape="(0,)")
    raw = _npy(header, b"", version)
    assert len(raw) == start + len(header)
    assert _read(raw) == []  # the header ends exactly at the end of the file
    field = "<H" if version[0] == 1 else "<I"
    past = raw[:8] + struct.pack(field, len(header) + 1) + raw[start:]
    error = _error(past)
    assert str(error) == (
        f"npy header length {len(header) + 1} runs past the end of the {len(raw)}-byte file"
    )
    assert error.offset == 8


def test_version_3_header_is_utf8() -> None:
    name = "é"
    header = _hdr(descr=f"[('{name}', '<i4')]")
    assert _read(_npy(header.encode("utf-8"), b"\0" * 8, (3, 0))) == []
    bad = _npy(header.encode("latin-1"), b"\0" * 8, (3, 0))
    error = _error(bad)
    assert str(error) == "npy header is not valid utf-8: invalid continuation byte"
    assert error.offset == 12


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_version_1_and_2_headers_are_latin1(version: tuple[int, int]) -> None:
    # \xff is no UTF-8 at all: latin-1 reads it as 'ÿ'
    header = _hdr(descr="[('\xff', '<i4')]").encode("latin-1")
    assert _read(_npy(header, b"\0" * 8, version)) == []


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_python2_longs_in_version_1_and_2(version: tuple[int, int]) -> None:
    assert _read(_npy(_hdr(shape="(2L,)"), b"\0" * 8, version)) == []


def test_no_python2_longs_in_version_3() -> None:
    error = _error(_npy(_hdr(shape="(2L,)"), b"\0" * 8, (3, 0)))
    assert "shape" not in str(error)


# -- header fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("[1]", "npy header is a list, not a dict"),
        ("'x'", "npy header is a str, not a dict"),
        (
            "{'descr': '<i4', 'fortran_order': False}",
            "npy header keys [\"'descr'\", \"'fortran_order'\"] are not exactly 'descr', 'fortran_order', 'shape'",
        ),
        (
            "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
            "npy header keys [\"'descr'\", \"'fortran_order'\", \"'shape'\", \"'x'\"] are not exactly "
            "'descr', 'fortran_order', 'shape'",
        ),
        (_hdr(fortran="0"), "npy fortran_order is 0, not True or False"),
        (_hdr(fortran="None"), "npy fortran_order is None, not True or False"),
        (_hdr(shape="[2]"), "npy shape [2] is not a tuple of non-negative integers"),
        (_hdr(shape="(-1,)"), "npy shape (-1,) is not a tuple of non-negative integers"),
        (_hdr(shape="(2, -1)"), "npy shape (2, -1) is not a tuple of non-negative integers"),
        (_hdr(shape="(True,)"), "npy shape (True,) is not a tuple of non-negative integers"),
        (_hdr(shape="('2',)"), "npy shape ('2',) is not a tuple of non-negative integers"),
        (_hdr(shape="2"), "npy shape 2 is not a tuple of non-negative integers"),
        (
            _hdr(descr="('<i4', (2,))", shape="(1,)"),
            "npy descr ('<i4', (2,)) is a sub-array dtype, which numpy cannot load",
        ),
    ],
)
def test_header_field_errors(header: str, message: str) -> None:
    assert str(_error(_npy(header, b"\0" * 64))) == message


def test_sub_array_descr_message_is_cut_at_80_characters() -> None:
    descr = "('" + "S" + "9" * 3 + "', (" + ", ".join(["1"] * 40) + ",))"
    error = _error(_npy(_hdr(descr=descr, shape="(0,)")))
    shown = (
        str(error).removeprefix("npy descr ").removesuffix(" is a sub-array dtype, which numpy cannot load")
    )
    assert len(shown) == 80


@pytest.mark.parametrize("fortran", ["True", "False"])
@pytest.mark.parametrize(
    ("shape", "count"),
    [("()", 1), ("(0,)", 0), ("(3,)", 3), ("(2, 3)", 6), ("(2, 0, 5)", 0), ("(1, 1, 7)", 7)],
)
def test_data_length_at_n_minus_1_n_n_plus_1(fortran: str, shape: str, count: int) -> None:
    header = _hdr(descr="'<i2'", shape=shape, fortran=fortran)
    end = 10 + len(header)
    expected = count * 2
    assert _read(_npy(header, b"\0" * expected)) == []
    (issue,) = _read(_npy(header, b"\0" * (expected + 1)))
    assert issue == Issue(
        "npy.trailing-data",
        Severity.SUSPICIOUS,
        f"1 bytes after the array data (shape {eval(shape)} x itemsize 2 = {expected}); numpy ignores "  # noqa: S307
        "them, so they can hide anything",
        offset=end + expected,
    )
    if expected:
        error = _error(_npy(header, b"\0" * (expected - 1)))
        assert str(error) == (
            f"npy data is {expected - 1} bytes, shape {eval(shape)} x itemsize 2 needs {expected}"  # noqa: S307
        )
        assert error.offset == end


def test_trailing_data_counts_every_byte() -> None:
    header = _hdr(descr="'<i4'", shape="(2,)")
    (issue,) = _read(_npy(header, b"\0" * 8 + b"hidden"))
    assert isinstance(issue, Issue)
    assert issue.message.startswith("6 bytes after the array data (shape (2,) x itemsize 4 = 8)")
    assert issue.offset == 10 + len(header) + 8


@pytest.mark.parametrize(
    "descr", ["'|O'", "'O'", "'<O8'", "[('a', '<i4'), ('o', '|O')]", "('|O', (2,))", "[('a', [('b', 'O')])]"]
)
@pytest.mark.parametrize("version", [(1, 0), (3, 0)])
def test_object_dtypes_hand_the_data_to_the_pickle_analysis(descr: str, version: tuple[int, int]) -> None:
    header = _hdr(descr=descr, shape="(1,)")
    raw = _npy(header, b"\x80\x04N.", version)
    (fact,) = _read(raw)
    assert isinstance(fact, PickleStream)
    assert fact.offset == len(raw) - 4
    assert fact.role == "npy object array"
    assert bytes(fact.data) == raw
    assert (fact.member, fact.max_pickles, fact.trailing_ok, fact.lenient) == (None, None, False, False)


# -- dtypes ----------------------------------------------------------------------------------------

CODE_SIZES = {
    "?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8, "q": 8, "Q": 8,
    "e": 2, "f": 4, "d": 8, "g": 16, "F": 8, "D": 16, "G": 32, "O": 8, "M": 8, "m": 8, "c": 1,
}  # fmt: skip


@pytest.mark.parametrize(("code", "size"), CODE_SIZES.items())
@pytest.mark.parametrize("order", ["", "<", ">", "|", "="])
def test_every_one_character_code(code: str, size: int, order: str) -> None:
    assert dtype_info(order + code) == (size, code == "O")


SIZED = [
    ("b", 1, 1), ("i", 1, 1), ("i", 2, 2), ("i", 4, 4), ("i", 8, 8), ("u", 1, 1), ("u", 2, 2),
    ("u", 4, 4), ("u", 8, 8), ("f", 2, 2), ("f", 4, 4), ("f", 8, 8), ("f", 16, 16), ("c", 8, 8),
    ("c", 16, 16), ("c", 32, 32), ("O", 4, 8), ("O", 8, 8), ("m", 8, 8), ("M", 8, 8),
]  # fmt: skip


@pytest.mark.parametrize(("code", "digits", "size"), SIZED)
def test_every_sized_code(code: str, digits: int, size: int) -> None:
    assert dtype_info(f"<{code}{digits}") == (size, code == "O")
    assert dtype_info(f"<{code}{digits:03d}") == (size, code == "O")


NOT_SIZED = [
    "b2", "i3", "i16", "u3", "u16", "f1", "f3", "f32", "c4", "c64", "O1", "O2", "O16", "m4", "M4",
    "m16", "B1", "h2", "d8", "?1", "i0", "i0004", "f0008",
]  # fmt: skip


@pytest.mark.parametrize("text", NOT_SIZED)
def test_sizes_numpy_does_not_have(text: str) -> None:
    with pytest.raises(FormatError) as info:
        dtype_info("<" + text)
    digits = text.lstrip("bBiufcOmMhd?")
    assert str(info.value) == f"npy type string '<{text}': numpy has no {text[0]!r} type of {digits} bytes"


@pytest.mark.parametrize(
    ("text", "size"),
    [("S5", 5), ("|S1", 1), ("a3", 3), ("U7", 28), ("<U1", 4), ("V3", 3), ("|V16", 16), ("S", 0), ("U", 0),
     ("V", 0), ("S0", 0), ("S2147483646", 2147483646), ("U536870911", 2147483644)],
)  # fmt: skip
def test_flexible_types(text: str, size: int) -> None:
    assert dtype_info(text) == (size, False)


@pytest.mark.parametrize(("text", "size"), [("S2147483647", 2147483647), ("U536870912", 2147483648),
                                             ("V99999999999", 99999999999)])  # fmt: skip
def test_flexible_types_past_numpy_item_size(text: str, size: int) -> None:
    with pytest.raises(FormatError) as info:
        dtype_info(text)
    assert str(info.value) == f"npy type string {text!r}: an item of {size} bytes is more than numpy allows"


def test_bytes_without_a_size() -> None:
    with pytest.raises(FormatError) as info:
        dtype_info("|a")
    assert str(info.value) == "npy type string '|a' has no size"


@pytest.mark.parametrize("code", ["u", "x", "Z"])
def test_codes_without_a_default_size(code: str) -> None:
    with pytest.raises(FormatError) as info:
        dtype_info("<" + code)
    expected = "has no size" if code == "u" else "is not one airlock can size"
    assert str(info.value) == (
        f"npy type string '<{code}' has no size" if code == "u" else f"npy type string '<{code}' {expected}"
    )


UNITS = "Y M W D h m s ms us ns ps fs as generic".split()


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("code", ["M", "m"])
def test_every_datetime_unit(unit: str, code: str) -> None:
    assert dtype_info(f"<{code}8[{unit}]") == (8, False)
    assert dtype_info(f"<{code}[{unit}]") == (8, False)


@pytest.mark.parametrize(
    "text",
    ["<M8[y]", "<M8[S]", "<m8[Ms]", "<M8[gen]", "<M8[generic2]", "<i8[s]", "<f8[D]", "<O8[s]", "S4[s]"],
)
def test_units_numpy_does_not_have(text: str) -> None:
    with pytest.raises(FormatError) as info:
        dtype_info(text)
    assert str(info.value) == f"npy type string {text!r}: only datetimes take a unit, one of numpy's"


@pytest.mark.parametrize(
    "text", ["", "<", "<<i4", "i4 ", " i4", "<i4x", "<M8[]", "<i\u0664", "!i4", "<i-4", "i4[s"]
)
def test_type_strings_airlock_cannot_size(text: str) -> None:
    with pytest.raises(FormatError) as info:
        dtype_info(text)
    assert str(info.value) == f"npy type string {text!r} is not one airlock can size"


def test_structured_dtypes() -> None:
    assert dtype_info([("a", "<i4"), ("b", "<f8")]) == (12, False)
    assert dtype_info([("a", "<i4", (2, 3))]) == (24, False)
    assert dtype_info([("a", "<i4", 3)]) == (12, False)
    assert dtype_info([("a", "<i4", ())]) == (4, False)
    assert dtype_info([("a", "<i4", 0)]) == (0, False)
    assert dtype_info([(("title", "name"), "<i2")]) == (2, False)
    assert dtype_info([("a", "<i4"), ("o", "|O")]) == (12, True)
    assert dtype_info([("o", "|O"), ("a", "<i4")]) == (12, True)
    assert dtype_info([("x", [("y", "<i2"), ("z", "S3")]), ("w", "<u8")]) == (13, False)
    assert dtype_info([]) == (0, False)
    assert dtype_info(("<i4", (2, 2))) == (16, False)
    assert dtype_info(("<i4", 3)) == (12, False)
    assert dtype_info(("<i4", (2, 0))) == (0, False)
    assert dtype_info(("<i4", (0,))) == (0, False)
    assert dtype_info([("a", "<i4", (3, 0))]) == (0, False)
    assert dtype_info(("|O", (2,))) == (16, True)


def test_padding_fields_may_repeat() -> None:
    assert dtype_info([("", "|V4"), ("a", "<i4"), ("", "V2"), ("", "<V1")]) == (11, False)


@pytest.mark.parametrize(
    ("descr", "label"),
    [
        ([("a", "<i4"), ("a", "<i4")], "'a'"),
        ([("", "<i4"), ("", "<i4")], "''"),
        ([("", "|V4"), ("", "<i4"), ("", "<i4")], "''"),
        ([(("t", "a"), "<i4"), ("a", "<i4")], "'a'"),
        ([(("t", "a"), "<i4"), ("t", "<i4")], "'t'"),
        ([(("t", "t"), "<i4")], "'t'"),
        ([(("t", "a"), "<i4"), (("t", "b"), "<i4")], "'t'"),
        ([("", ("V4", 1)), ("", ("V4", 1))], "''"),
        ([("", "S4"), ("", "S4")], "''"),
        # only the byte-order marks are stripped before the V: "XV4" is no padding (and no type)
        ([("", "<i4"), ("", "XV4")], "''"),
    ],
)
def test_names_used_twice(descr: list[tuple[object, ...]], label: str) -> None:
    with pytest.raises(FormatError) as info:
        dtype_info(descr)  # type: ignore[arg-type]
    assert str(info.value) == f"npy structured dtype uses the field name or title {label} twice"


@pytest.mark.parametrize(
    ("descr", "message"),
    [
        ([["a", "<i4"]], "npy structured field ['a', '<i4'] is not (name, dtype[, shape])"),
        ([("a",)], "npy structured field ('a',) is not (name, dtype[, shape])"),
        ([("a", "<i4", 1, 2)], "npy structured field ('a', '<i4', 1, 2) is not (name, dtype[, shape])"),
        ([(1, "<i4")], "npy field name 1 is not a string or (title, name)"),
        ([(("a",), "<i4")], "npy field name ('a',) is not a string or (title, name)"),
        ([(("a", "b", "c"), "<i4")], "npy field name ('a', 'b', 'c') is not a string or (title, name)"),
        (("<i4",), "npy sub-array dtype ('<i4',) is not (dtype, shape)"),
        (("<i4", (2,), 1), "npy sub-array dtype ('<i4', (2,), 1) is not (dtype, shape)"),
        (("<i4", -1), "npy sub-array shape -1 is not a non-negative int or tuple of them"),
        (("<i4", (2, -1)), "npy sub-array shape (2, -1) is not a non-negative int or tuple of them"),
        (("<i4", True), "npy sub-array shape True is not a non-negative int or tuple of them"),
        (("<i4", (True,)), "npy sub-array shape (True,) is not a non-negative int or tuple of them"),
        (("<i4", [2]), "npy sub-array shape [2] is not a non-negative int or tuple of them"),
        ([("a", "<i4", -2)], "npy sub-array shape -2 is not a non-negative int or tuple of them"),
        (3, "npy descr 3 is not a type string, a field list or a sub-array"),
        ({"a": 1}, "npy descr {'a': 1} is not a type string, a field list or a sub-array"),
    ],
)
def test_dtype_shape_errors(descr: object, message: str) -> None:
    with pytest.raises(FormatError) as info:
        dtype_info(descr)  # type: ignore[arg-type]
    assert str(info.value) == message


def _nested(depth: int) -> object:
    descr: object = "<i4"
    for _ in range(depth):
        descr = [("a", descr)]
    return descr


def test_nesting_depth_at_n_minus_1_n_n_plus_1() -> None:
    # the top level is depth 0: 16 nested levels are read, the 17th is refused
    assert dtype_info(_nested(16)) == (4, False)  # type: ignore[arg-type]
    assert dtype_info(("<i4", 1), depth=15) == (4, False)
    assert dtype_info("<i4", depth=16) == (4, False)
    for too_deep in (_nested(17), _nested(18)):
        with pytest.raises(FormatError) as info:
            dtype_info(too_deep)  # type: ignore[arg-type]
        assert str(info.value) == "npy dtype nested deeper than 16 levels"
    with pytest.raises(FormatError):
        dtype_info("<i4", depth=17)


def test_sub_array_nesting_counts_too() -> None:
    descr: object = "<i4"
    for _ in range(17):
        descr = (descr, 1)
    with pytest.raises(FormatError, match="nested deeper than 16"):
        dtype_info(descr)  # type: ignore[arg-type]
    assert dtype_info(descr[0]) == (4, False)  # type: ignore[index]
