"""The GGUF reader rule by rule, on files built in code (tests/formats_hf/gguf_build.py): each count
and length at N-1, N and N+1 of the bytes that remain and of the whole file, every value type,
every ggml type's block size, alignment, tensor overlap / gap / trailing bounds, template keys and
their near misses, and the exact rule, severity, message and offset of each finding.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from airlock._formats import gguf as gguf_mod
from airlock._formats.base import Issue, ReadContext, Template
from airlock._formats.gguf import GGML_TYPES, VALUE_SIZES, GGUFReader, _Cursor, _Stop, is_template_key
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Severity
from tests.formats_hf.gguf_build import (
    ARRAY,
    BOOL,
    FLOAT32,
    GGUF,
    INT8,
    STRING,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    Tensor,
    gstr,
)

TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"


class _Clock:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def _read(raw: bytes, clock: _Clock | None = None, **limits: int) -> list[object]:
    ctx = ReadContext(
        limits=dataclasses.replace(DEFAULT_LIMITS, **limits),
        file_path=Path("m.gguf"),
        root=Path(),
        check_time=clock or (lambda: None),
    )
    return list(GGUFReader().read(memoryview(raw), ctx))


def _header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


# -- header ----------------------------------------------------------------------------------------


def test_sniff_and_name() -> None:
    assert GGUFReader().sniff(b"GGUF\x03\0\0\0", 8)
    assert not GGUFReader().sniff(b"GGUG\x03\0\0\0", 8)
    assert not GGUFReader().sniff(b"gguf", 4)
    assert GGUFReader().name == "gguf"


@pytest.mark.parametrize("size", [0, 4, 23])
def test_shorter_than_the_header(size: int) -> None:
    with pytest.raises(FormatError) as info:
        _read(_header(0, 0)[:size])
    assert str(info.value) == f"file of {size} bytes is shorter than the 24-byte GGUF header"
    assert info.value.offset == 0


@pytest.mark.parametrize("version", [2, 3])
def test_empty_file_of_each_version(version: int) -> None:
    assert _read(_header(0, 0, version)) == []


@pytest.mark.parametrize(
    ("version", "hint"),
    [
        (0, ""),
        (1, ""),
        (4, ""),
        (0x02000000, " (byte-swapped: a big-endian GGUF, not supported)"),
        (0x03000000, " (byte-swapped: a big-endian GGUF, not supported)"),
        (0x04000000, ""),
        (0x00020000, ""),
    ],
)
def test_unsupported_versions(version: int, hint: str) -> None:
    with pytest.raises(FormatError) as info:
        _read(_header(0, 0, version))
    assert str(info.value) == f"GGUF version {version} is not supported, expected 2 or 3{hint}"
    assert info.value.offset == 4


def _count_issue(what: str, count: int, required: int, remaining: int, size: int, pos: int) -> Issue:
    beyond = required > size
    return Issue(
        "gguf.count-exceeds-file",
        Severity.MALICIOUS if beyond else Severity.ERROR,
        f"{what} {count} needs at least {required} bytes but only {remaining} remain (file size {size})"
        + ("; larger than the whole file, a crafted value (parser heap-overflow class)" if beyond else ""),
        offset=pos,
        evidence=f"{what}={count}",
    )


def test_metadata_count_against_the_remaining_bytes() -> None:
    # each smallest pair is 13 bytes: an empty key (8), a type (4) and a UINT8 (1)
    pair = _kv("", UINT8, b"\0")
    keys = [_kv(f"k{i}", UINT8, b"\0") for i in range(3)]
    body = b"".join(keys)
    assert len(pair) == 13
    raw = _header(0, 3) + body
    assert _read(raw) == []
    # a count that needs one pair more than the bytes that remain
    tight = _header(0, 3) + b"\0" * 38
    assert _read(tight) == [_count_issue("metadata count", 3, 39, 38, 62, 24)]


def test_tensor_count_against_the_remaining_bytes() -> None:
    info = gstr("") + struct.pack("<I", 1) + struct.pack("<IQ", 0, 0)
    assert len(info) == 24
    raw = _header(2, 0) + b"\0" * 47
    assert _read(raw) == [_count_issue("tensor count", 2, 48, 47, 71, 24)]


def test_metadata_count_is_checked_before_the_tensor_count() -> None:
    raw = _header(1 << 40, 1 << 40) + b"\0" * 8
    (issue,) = _read(raw)
    assert isinstance(issue, Issue)
    assert issue.evidence == f"metadata count={1 << 40}"


@pytest.mark.parametrize(
    ("required", "severity"),
    [(89, None), (90, None), (91, Severity.ERROR), (100, Severity.ERROR), (101, Severity.MALICIOUS)],
)
def test_cursor_need_at_the_remaining_bytes_and_the_file_size(
    required: int, severity: Severity | None
) -> None:
    cur = _Cursor(memoryview(b"\0" * 100))
    cur.pos = 10
    if severity is None:
        cur.need(required, 1, "thing")
        return
    with pytest.raises(_Stop) as info:
        cur.need(required, 1, "thing")
    assert info.value.issue.severity is severity
    assert info.value.issue.rule == "gguf.length-exceeds-file"
    assert info.value.issue.offset == 10
    assert str(info.value) == info.value.issue.message


def test_cursor_need_multiplies_by_the_unit() -> None:
    cur = _Cursor(memoryview(b"\0" * 100))
    cur.need(25, 4, "thing")
    with pytest.raises(_Stop) as info:
        cur.need(26, 4, "thing", "x.rule")
    assert info.value.issue == Issue(
        "x.rule",
        Severity.MALICIOUS,
        "thing 26 needs at least 104 bytes but only 100 remain (file size 100); larger than the whole "
        "file, a crafted value (parser heap-overflow class)",
        offset=0,
        evidence="thing=26",
    )


def test_cursor_reads_little_endian() -> None:
    cur = _Cursor(memoryview(struct.pack("<IQ", 0x01020304, 0x0102030405060708) + b"\x01\x02\x03"))
    assert cur.u32() == 0x01020304
    assert cur.pos == 4
    assert cur.u64() == 0x0102030405060708
    assert cur.pos == 12
    with pytest.raises(_Stop) as info:
        cur.u32()
    assert info.value.issue == Issue(
        "gguf.truncated",
        Severity.ERROR,
        "u32 field 1 needs at least 4 bytes but only 3 remain (file size 15)",
        offset=12,
        evidence="u32 field=1",
    )
    with pytest.raises(_Stop) as info:
        cur.u64()
    assert info.value.issue.message == "u64 field 1 needs at least 8 bytes but only 3 remain (file size 15)"
    assert info.value.issue.rule == "gguf.truncated"


def test_cursor_skip_and_string() -> None:
    cur = _Cursor(memoryview(gstr("abc") + b"xy"))
    assert bytes(cur.string("s")) == b"abc"
    assert cur.pos == 11
    cur.skip(1, 2, "pair")
    assert cur.pos == 13
    cur2 = _Cursor(memoryview(gstr(b"ab", length=3)))
    with pytest.raises(_Stop) as info:
        cur2.string("key")
    assert info.value.issue == Issue(
        "gguf.length-exceeds-file",
        Severity.ERROR,
        "key length 3 needs at least 3 bytes but only 2 remain (file size 10)",
        offset=8,
        evidence="key length=3",
    )


# -- metadata --------------------------------------------------------------------------------------


def test_metadata_loop_checks_the_clock_every_1024_pairs() -> None:
    for n, calls in ((1, 1), (1024, 1), (1025, 2), (2048, 2), (2049, 3)):
        body = b"".join(_kv(f"k{i}", UINT8, b"\0") for i in range(n))
        clock = _Clock()
        assert _read(_header(0, n) + body, clock) == []
        assert clock.calls == calls, n


def test_tensor_loop_checks_the_clock_every_1024_infos() -> None:
    for n, calls in ((1, 2), (1024, 2), (1025, 3)):  # one call from the metadata loop
        gg = GGUF(tensors=[Tensor(f"t{i}", [1]) for i in range(n)], alignment=4)
        gg.kv = [("general.alignment", UINT32, 4)]
        clock = _Clock()
        assert _read(gg.build(), clock) == []
        assert clock.calls == calls, n


def test_key_that_is_not_utf8() -> None:
    with pytest.raises(FormatError) as info:
        _read(_header(0, 1) + _kv(b"a\xffb", UINT8, b"\0"))
    assert str(info.value) == "metadata key is not valid UTF-8 at byte 1"
    assert info.value.offset == 24 + 8 + 1


def test_duplicate_keys() -> None:
    first = _kv("a.b", UINT8, b"\0")
    raw = _header(0, 2) + first + _kv("a.b", UINT8, b"\0")
    assert _read(raw) == [
        Issue(
            "gguf.duplicate-key",
            Severity.ERROR,
            "metadata key 'a.b' appears twice (loaders disagree on which value wins)",
            offset=24 + len(first),
        )
    ]


@pytest.mark.parametrize(
    ("first", "second", "shown"),
    [
        ("a", "a\0x", ("'a'", "'a\\x00x'")),
        ("a\0x", "a\0y", ("'a\\x00x'", "'a\\x00y'")),
        ("a\0x", "a", ("'a\\x00x'", "'a'")),
    ],
)
def test_keys_that_are_the_same_to_llama_cpp(first: str, second: str, shown: tuple[str, str]) -> None:
    one = _kv(first, UINT8, b"\0")
    raw = _header(0, 2) + one + _kv(second, UINT8, b"\0")
    assert _read(raw) == [
        Issue(
            "gguf.duplicate-key",
            Severity.ERROR,
            f"metadata keys {shown[0]} and {shown[1]} are the same key to llama.cpp, which cuts keys at the "
            "first NUL and keeps the first; gguf-py and transformers keep both",
            offset=24 + len(one),
        )
    ]


def test_the_first_full_key_is_named_for_a_third_nul_key() -> None:
    keys = [_kv(k, UINT8, b"\0") for k in ("a\0x", "a\0y", "a\0z")]
    issues = _read(_header(0, 3) + b"".join(keys))
    assert [i.message.split(" are ")[0] for i in issues if isinstance(i, Issue)] == [
        "metadata keys 'a\\x00x' and 'a\\x00y'",
        "metadata keys 'a\\x00x' and 'a\\x00z'",
    ]


def test_near_miss_keys_are_distinct() -> None:
    keys = [_kv(k, UINT8, b"\0") for k in ("ab", "a", "a\0", "b\0a")]
    issues = _read(_header(0, 4) + b"".join(keys))
    # "a\0" is "a" to llama.cpp; "ab", "a" and "b\0a" are distinct
    assert [i.message[:30] for i in issues if isinstance(i, Issue)] == ["metadata keys 'a' and 'a\\x00' "]


def test_long_key_is_cut_in_the_message() -> None:
    key = "k" * 100
    raw = _header(0, 2) + _kv(key, UINT8, b"\0") * 2
    (issue,) = _read(raw)
    assert isinstance(issue, Issue)
    assert (
        issue.message == f"metadata key {repr(key)[:80]} appears twice (loaders disagree on which value wins)"
    )


@pytest.mark.parametrize(("vtype", "size"), sorted(VALUE_SIZES.items()))
def test_every_fixed_size_value_type(vtype: int, size: int) -> None:
    raw = _header(0, 2) + _kv("a", vtype, b"\0" * size) + _kv("b", UINT8, b"\0")
    assert _read(raw) == []
    # one byte short: the second pair's value is cut
    short = _header(0, 1) + _kv("a", vtype, b"\0" * (size - 1))
    (issue,) = _read(short)
    assert issue == Issue(
        "gguf.length-exceeds-file",
        Severity.ERROR,
        f"value of 'a' 1 needs at least {size} bytes but only {size - 1} remain (file size {len(short)})",
        offset=len(short) - size + 1,
        evidence="value of 'a'=1",
    )


def test_value_sizes_table() -> None:
    assert VALUE_SIZES == {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


@pytest.mark.parametrize(("byte", "bad"), [(0, False), (1, False), (2, True), (255, True)])
def test_bool_values(byte: int, bad: bool) -> None:
    raw = _header(0, 1) + _kv("flag", BOOL, bytes([byte]))
    expected = (
        [
            Issue(
                "gguf.value",
                Severity.ERROR,
                f"metadata 'flag': BOOL byte is {byte}, expected 0 or 1",
                offset=40,
            )
        ]
        if bad
        else []
    )
    assert _read(raw) == expected


@pytest.mark.parametrize("byte", [2, 255])
def test_other_one_byte_values_are_not_bools(byte: int) -> None:
    assert _read(_header(0, 2) + _kv("u", UINT8, bytes([byte])) + _kv("i", INT8, bytes([byte]))) == []


@pytest.mark.parametrize("vtype", [13, 14, 255, 2**32 - 1])
def test_unknown_value_type(vtype: int) -> None:
    raw = _header(0, 2) + _kv("k", vtype, b"\0" * 16) + _kv("z", UINT8, b"\0")
    assert _read(raw) == [
        Issue(
            "gguf.value-type",
            Severity.ERROR,
            f"metadata 'k': value type {vtype} is unknown, expected 0..12",
            offset=24 + 9,
        )
    ]


# -- alignment -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vtype", "name"),
    [(UINT8, "UINT8"), (UINT16, "UINT16"), (UINT64, "UINT64"), (FLOAT32, "FLOAT32"), (BOOL, "BOOL")],
)
def test_alignment_must_be_uint32(vtype: int, name: str) -> None:
    size = VALUE_SIZES[vtype]
    raw = _header(0, 1) + _kv("general.alignment", vtype, b"\x01" + b"\0" * (size - 1))
    assert _read(raw) == [
        Issue(
            "gguf.alignment", Severity.ERROR, f"general.alignment has type {name}, expected UINT32", offset=53
        )
    ]


@pytest.mark.parametrize("value", [0, 3, 6, 12, 2**32 - 1, 0x80000001])
def test_alignment_must_be_a_power_of_two(value: int) -> None:
    raw = _header(0, 1) + _kv("general.alignment", UINT32, struct.pack("<I", value))
    assert _read(raw) == [
        Issue(
            "gguf.alignment",
            Severity.ERROR,
            f"general.alignment is {value}, expected a power of two",
            offset=53,
        )
    ]


@pytest.mark.parametrize("value", [1, 2, 8, 64, 2**31])
def test_powers_of_two_are_alignments(value: int) -> None:
    raw = _header(0, 1) + _kv("general.alignment", UINT32, struct.pack("<I", value))
    assert _read(raw) == []


def test_alignment_applies_to_tensor_offsets() -> None:
    gg = GGUF(
        kv=[("general.alignment", UINT32, 8)],
        tensors=[Tensor("a", [2]), Tensor("b", [2], offset=12)],
        alignment=8,
    )
    issues = _read(gg.build())
    assert issues[0] == Issue(
        "gguf.tensor-alignment",
        Severity.ERROR,
        "tensor 'b': data offset 12 is not a multiple of the alignment 8",
        offset=24 + 33 + 33,  # after the header, the alignment pair and tensor a's info
    )
    # the default alignment is 32: 16 is not a multiple of it, 32 is
    default = GGUF(tensors=[Tensor("a", [4]), Tensor("b", [4], offset=16)])
    assert [i.rule for i in _read(default.build()) if isinstance(i, Issue)] == ["gguf.tensor-alignment"]
    ok = GGUF(tensors=[Tensor("a", [4]), Tensor("b", [4], offset=32)])
    assert _read(ok.build()) == []


def test_alignment_key_near_misses_are_plain_values() -> None:
    for key in ("general.alignmentx", "general.alignmen", "General.alignment", "general.alignment\0"):
        raw = _header(0, 1) + _kv(key, UINT64, struct.pack("<Q", 3))
        assert _read(raw) == [], key


# -- strings and templates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "template"),
    [
        ("tokenizer.chat_template", True),
        ("tokenizer.chat_template.tool_use", True),
        ("tokenizer.chat_template\0x", True),
        ("tokenizer.chat_template.", True),
        ("tokenizer.chat_templates", False),
        ("tokenizer.chat_templat", False),
        ("tokenizer.chat_template_x", False),
        ("xtokenizer.chat_template", False),
        ("\0tokenizer.chat_template", False),
        ("Tokenizer.chat_template", False),
        ("general.notes", False),
    ],
)
def test_template_keys(key: str, template: bool) -> None:
    assert is_template_key(key) is template


def test_template_string_is_handed_on() -> None:
    raw = _header(0, 1) + _kv("tokenizer.chat_template", STRING, gstr(TEMPLATE))
    assert _read(raw) == [Template("tokenizer.chat_template", TEMPLATE, offset=59)]


def test_template_key_name_shows_control_characters() -> None:
    raw = _header(0, 1) + _kv("tokenizer.chat_template\0\x01\x1f ", STRING, gstr("plain text"))
    (template,) = _read(raw)
    assert template == Template("tokenizer.chat_template\\0\\x01\\x1f ", "plain text", offset=24 + 8 + 27 + 4)


def test_template_key_string_need_not_look_like_jinja() -> None:
    raw = _header(0, 1) + _kv("tokenizer.chat_template", STRING, gstr(""))
    assert _read(raw) == [Template("tokenizer.chat_template", "", offset=59)]


def test_template_that_is_not_utf8() -> None:
    raw = _header(0, 1) + _kv("tokenizer.chat_template", STRING, gstr(b"{{ x }}\xff"))
    with pytest.raises(FormatError) as info:
        _read(raw)
    assert str(info.value) == "template 'tokenizer.chat_template' is not valid UTF-8 at byte 7"
    assert info.value.offset == 59 + 8 + 7


@pytest.mark.parametrize(
    ("text", "jinja"),
    [
        ("{{ x }}", True),
        ("{% if x %}", True),
        ("{{ x %}", False),
        ("{% x }}", False),
        ("{{", False),
        ("}} {{", True),
        ("%} {%", True),
        ("{ { x } }", False),
        ("plain", False),
        ("{# c #}", False),
    ],
)
def test_other_strings_that_look_like_templates(text: str, jinja: bool) -> None:
    raw = _header(0, 1) + _kv("general.notes", STRING, gstr(text))
    assert _read(raw) == ([Template("general.notes", text, offset=49)] if jinja else [])


def test_other_strings_are_decoded_leniently() -> None:
    raw = _header(0, 1) + _kv("general.notes\0", STRING, gstr(b"{{ x }}\xff"))
    assert _read(raw) == [Template("general.notes\\0", "{{ x }}\ufffd", offset=50)]


@pytest.mark.parametrize(("delta", "over"), [(-1, False), (0, False), (1, True)])
@pytest.mark.parametrize("key", ["tokenizer.chat_template", "tokenizer.chat_template.x", "general.notes"])
def test_string_size_at_the_template_limit(delta: int, over: bool, key: str) -> None:
    text = "{{ x }}" + "a" * 20
    limit = len(text) - delta
    raw = _header(0, 1) + _kv(key, STRING, gstr(text))
    value_at = 24 + 8 + len(key) + 4
    expected: object = [
        Issue(
            "template.parse",
            Severity.ERROR,
            f"template {key}: {len(text)} bytes exceeds limit max_template_bytes {limit}",
            offset=value_at,
        )
        if over
        else Template(key, text, offset=value_at)
    ]
    assert _read(raw, max_template_bytes=limit) == expected


@pytest.mark.parametrize("text", ["a" * 40, "{{ a" + "a" * 40, "{% a" + "a" * 40 + "}}"])
def test_oversized_plain_strings_are_skipped(text: str) -> None:
    raw = _header(0, 1) + _kv("general.notes", STRING, gstr(text))
    assert _read(raw, max_template_bytes=8) == []


@pytest.mark.parametrize("text", ["{{" + "a" * 40 + "}}", "{%" + "a" * 40 + "%}", "a" * 40 + "}}{{"])
def test_oversized_strings_that_look_like_templates(text: str) -> None:
    raw = _header(0, 1) + _kv("general.notes", STRING, gstr(text))
    assert _read(raw, max_template_bytes=8) == [
        Issue(
            "template.parse",
            Severity.ERROR,
            f"template general.notes: {len(text)} bytes exceeds limit max_template_bytes 8",
            offset=49,
        )
    ]


def test_oversized_string_is_searched_in_chunks_not_byte_by_byte() -> None:
    # a 2 MiB string against the 1 MiB template limit: searched in 1 MiB chunks (milliseconds);
    # a window moved one byte at a time would copy a mebibyte per byte and never finish
    import time

    text = b"{{" + b"a" * (2 << 20) + b"}}"
    raw = _header(0, 1) + _kv("general.notes", STRING, gstr(text))
    started = time.monotonic()
    assert [i.rule for i in _read(raw) if isinstance(i, Issue)] == ["template.parse"]
    assert time.monotonic() - started < 30


def test_bytes_look_like_jinja_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gguf_mod, "_CHUNK", 4)
    look = gguf_mod._bytes_look_like_jinja
    # markers straddling a chunk boundary are found thanks to the one byte of overlap
    assert look(memoryview(b"abc{{ddd}}"))
    assert look(memoryview(b"abc{%ddd%}"))
    assert look(memoryview(b"}}xxxxxxxxxxxx{{"))
    assert not look(memoryview(b"abc{ {dd} }"))
    assert not look(memoryview(b"abc{{ddd%}"))
    assert not look(memoryview(b"{%xxxxxxx}}"))
    assert not look(memoryview(b""))


@pytest.mark.parametrize(
    ("text", "jinja"),
    [
        (b"{{}}", True),
        (b"{%%}", True),
        (b"{{ %}", False),
        (b"{% }}", False),
        (b"{{ x", False),
        (b"x }}", False),
        (b"{%", False),
    ],
)
def test_bytes_look_like_jinja(text: bytes, jinja: bool) -> None:
    assert gguf_mod._bytes_look_like_jinja(memoryview(text)) is jinja
    assert gguf_mod._looks_like_jinja(text.decode()) is jinja


# -- templates stored as arrays --------------------------------------------------------------------


def _str_array(items: list[bytes], count: int | None = None) -> bytes:
    return struct.pack("<IQ", STRING, len(items) if count is None else count) + b"".join(
        gstr(i) for i in items
    )


def test_template_array_of_one_element() -> None:
    key = "tokenizer.chat_template"
    raw = _header(0, 1) + _kv(key, ARRAY, _str_array([TEMPLATE.encode()]))
    assert _read(raw) == [Template(f"{key}[0]", TEMPLATE, offset=59 + 12)]


def test_template_array_elements_and_their_join() -> None:
    key = "tokenizer.chat_template.x"
    parts = [b"{% if x %}", b"a", b"{% endif %}"]
    raw = _header(0, 1) + _kv(key, ARRAY, _str_array(parts))
    first = 24 + 8 + len(key) + 4 + 12
    assert _read(raw) == [
        Template(f"{key}[0]", "{% if x %}", offset=first),
        Template(f"{key}[1]", "a", offset=first + 18),
        Template(f"{key}[2]", "{% endif %}", offset=first + 27),
        Template(f"{key} (elements joined)", "{% if x %}a{% endif %}", offset=first - 12),
    ]


def test_template_array_of_no_element() -> None:
    raw = _header(0, 2) + _kv("tokenizer.chat_template", ARRAY, _str_array([])) + _kv("z", UINT8, b"\0")
    assert _read(raw) == []


def test_template_array_of_numbers_is_skipped() -> None:
    arr = struct.pack("<IQ", UINT32, 2) + b"\0" * 8
    raw = _header(0, 2) + _kv("tokenizer.chat_template", ARRAY, arr) + _kv("z", BOOL, b"\x02")
    assert [i.rule for i in _read(raw) if isinstance(i, Issue)] == ["gguf.value"]


def test_template_array_element_that_is_not_utf8() -> None:
    key = "tokenizer.chat_template"
    raw = _header(0, 1) + _kv(key, ARRAY, _str_array([b"ok", b"a\xff"]))
    with pytest.raises(FormatError) as info:
        _read(raw)
    assert str(info.value) == "template 'tokenizer.chat_template' element 1 is not valid UTF-8 at byte 1"
    assert info.value.offset == 59 + 12 + 10 + 8 + 1


@pytest.mark.parametrize(("delta", "over"), [(-1, False), (0, False), (1, True)])
def test_template_array_total_at_the_limit(delta: int, over: bool) -> None:
    key = "tokenizer.chat_template"
    parts = [b"{{ a }}", b"bbbb", b"cc"]
    limit = 13 - delta
    raw = _header(0, 1) + _kv(key, ARRAY, _str_array(parts))
    if not over:
        assert len(_read(raw, max_template_bytes=limit)) == 4
        return
    with pytest.raises(LimitError) as info:
        _read(raw, max_template_bytes=limit)
    assert str(info.value) == (
        f"template 'tokenizer.chat_template' stored as an array holds more than {limit} bytes "
        "(limit max_template_bytes)"
    )
    assert info.value.offset == 59 + 12 + 15 + 12


def test_template_array_count_against_the_file() -> None:
    key = "tokenizer.chat_template"
    raw = _header(0, 1) + _kv(key, ARRAY, _str_array([b"a"], count=2))
    (issue,) = _read(raw)
    assert issue == _count_issue(f"array {key!r} element count", 2, 16, 9, len(raw), 59 + 12)
    exact = _header(0, 1) + _kv(key, ARRAY, _str_array([b"", b""], count=2))
    assert _read(exact) == [
        Template(f"{key}[0]", "", offset=71),
        Template(f"{key}[1]", "", offset=79),
        Template(f"{key} (elements joined)", "", offset=59),
    ]


def test_template_array_checks_the_clock_every_4096_elements() -> None:
    key = "tokenizer.chat_template"
    for n, calls in ((4095, 1), (4096, 2), (8191, 2), (8192, 3)):
        clock = _Clock()
        raw = _header(0, 1) + _kv(key, ARRAY, _str_array([b""] * n))
        assert len(_read(raw, clock)) == n + 1
        assert clock.calls == calls, n


# -- other arrays ----------------------------------------------------------------------------------


def test_arrays_are_skipped_exactly() -> None:
    nums = struct.pack("<IQ", UINT16, 3) + b"\0" * 6
    strs = _str_array([b"a", b"bc", b""])
    nested = struct.pack("<IQ", ARRAY, 2) + nums + strs
    raw = _header(0, 4) + _kv("n", ARRAY, nums) + _kv("s", ARRAY, strs) + _kv("x", ARRAY, nested)
    raw += _kv("z", BOOL, b"\x07")
    assert [i.message for i in _read(raw) if isinstance(i, Issue)] == [
        "metadata 'z': BOOL byte is 7, expected 0 or 1"
    ]


@pytest.mark.parametrize(("vtype", "size"), sorted(VALUE_SIZES.items()))
def test_number_array_length_against_the_file(vtype: int, size: int) -> None:
    arr = struct.pack("<IQ", vtype, 3) + b"\0" * (3 * size - 1)
    raw = _header(0, 1) + _kv("n", ARRAY, arr)
    (issue,) = _read(raw)
    assert issue == _count_issue(
        "array 'n' element count", 3, 3 * size, 3 * size - 1, len(raw), 24 + 9 + 4 + 12
    )
    assert _read(_header(0, 1) + _kv("n", ARRAY, arr + b"\0")) == []


def test_string_array_count_against_the_file() -> None:
    arr = struct.pack("<IQ", STRING, 3) + gstr("") * 2 + b"\0" * 7
    raw = _header(0, 1) + _kv("s", ARRAY, arr)
    assert _read(raw) == [_count_issue("array 's' element count", 3, 24, 23, len(raw), 49)]


def test_string_array_with_a_cut_length_field() -> None:
    arr = struct.pack("<IQ", STRING, 2) + gstr("abcdefgh") + b"\0" * 7
    raw = _header(0, 1) + _kv("s", ARRAY, arr)
    assert _read(raw) == [
        Issue(
            "gguf.truncated",
            Severity.ERROR,
            f"array 's' string length field 1 needs at least 8 bytes but only 7 remain (file size {len(raw)})",
            offset=len(raw) - 7,
            evidence="array 's' string length field=1",
        )
    ]


def test_string_array_length_field_ending_at_the_file_end() -> None:
    arr = struct.pack("<IQ", STRING, 2) + gstr("abcdefgh") + gstr("")
    assert _read(_header(0, 1) + _kv("s", ARRAY, arr)) == []


@pytest.mark.parametrize(("length", "ok"), [(4, True), (5, True), (6, False)])
def test_string_array_element_length_at_the_file_end(length: int, ok: bool) -> None:
    arr = struct.pack("<IQ", STRING, 2) + gstr("abcdefghij") + struct.pack("<Q", length) + b"xxxxx"
    raw = _header(0, 1) + _kv("s", ARRAY, arr)
    if ok:
        assert _read(raw) == []
        return
    assert _read(raw) == [
        Issue(
            "gguf.length-exceeds-file",
            Severity.ERROR,
            f"array 's' string length {length} needs at least {length} bytes but only 5 remain "
            f"(file size {len(raw)})",
            offset=len(raw) - 5,
            evidence=f"array 's' string length={length}",
        )
    ]


def test_string_array_checks_the_clock_every_65536_strings() -> None:
    for n, calls in ((65536, 1), (65537, 2)):
        clock = _Clock()
        arr = struct.pack("<IQ", STRING, n) + gstr("") * n
        assert _read(_header(0, 1) + _kv("s", ARRAY, arr), clock) == []
        assert clock.calls == 1 + calls, n  # one for the metadata loop


def test_nested_array_count_against_the_file() -> None:
    arr = struct.pack("<IQ", ARRAY, 2) + struct.pack("<IQ", UINT8, 0) + b"\0" * 11
    raw = _header(0, 1) + _kv("x", ARRAY, arr)
    assert _read(raw) == [_count_issue("array 'x' element count", 2, 24, 23, len(raw), 49)]


def test_nested_arrays_check_the_clock_every_4096_elements() -> None:
    for n, calls in ((4095, 1), (4096, 2)):
        clock = _Clock()
        arr = struct.pack("<IQ", ARRAY, n) + struct.pack("<IQ", UINT8, 0) * n
        assert _read(_header(0, 1) + _kv("x", ARRAY, arr), clock) == []
        assert clock.calls == calls, n


def _nested_array(depth: int) -> bytes:
    inner = struct.pack("<IQ", UINT8, 0)
    for _ in range(depth - 1):
        inner = struct.pack("<IQ", ARRAY, 1) + inner
    return inner


@pytest.mark.parametrize("limit", [1, 2, 8])
def test_array_depth_at_n_minus_1_n_n_plus_1(limit: int) -> None:
    for depth in (limit - 1, limit):
        if depth:
            assert (
                _read(_header(0, 1) + _kv("x", ARRAY, _nested_array(depth)), max_gguf_array_depth=limit) == []
            )
    raw = _header(0, 1) + _kv("x", ARRAY, _nested_array(limit + 1))
    with pytest.raises(LimitError) as info:
        _read(raw, max_gguf_array_depth=limit)
    assert str(info.value) == f"metadata 'x': arrays nested deeper than {limit} (limit max_gguf_array_depth)"
    assert info.value.offset == 24 + 9 + 4 + 12 * limit


def test_array_depth_applies_to_template_keys_too() -> None:
    raw = _header(0, 1) + _kv("tokenizer.chat_template", ARRAY, _nested_array(3))
    with pytest.raises(LimitError):
        _read(raw, max_gguf_array_depth=2)
    assert _read(raw, max_gguf_array_depth=3) == []


@pytest.mark.parametrize("etype", [13, 99])
def test_array_of_an_unknown_type(etype: int) -> None:
    arr = struct.pack("<IQ", ARRAY, 1) + struct.pack("<IQ", etype, 0)
    raw = _header(0, 1) + _kv("x", ARRAY, arr)
    assert _read(raw) == [
        Issue(
            "gguf.value-type",
            Severity.ERROR,
            f"metadata 'x': value type {etype} is unknown, expected 0..12",
            offset=49,
        )
    ]


# -- tensor infos ----------------------------------------------------------------------------------


def _one(tensor: Tensor, **kw: object) -> list[object]:
    return _read(GGUF(tensors=[tensor], **kw).build())  # type: ignore[arg-type]


def test_tensor_name_that_is_not_utf8() -> None:
    raw = _header(1, 0) + gstr(b"t\xff") + struct.pack("<IQIQ", 1, 1, 0, 0) + b"\0" * 32
    with pytest.raises(FormatError) as info:
        _read(raw)
    assert str(info.value) == "tensor name is not valid UTF-8 at byte 1"
    assert info.value.offset == 24 + 8 + 1


def test_duplicate_tensor() -> None:
    gg = GGUF(tensors=[Tensor("w", [8]), Tensor("w", [8])])
    issues = _read(gg.build())
    first_len = 8 + 1 + 4 + 8 + 4 + 8
    assert issues == [
        Issue("gguf.duplicate-tensor", Severity.ERROR, "tensor 'w' appears twice", offset=24 + first_len)
    ]


@pytest.mark.parametrize(("n_dims", "ok"), [(0, False), (1, True), (4, True), (5, False)])
def test_tensor_dims_count(n_dims: int, ok: bool) -> None:
    raw = GGUF(tensors=[Tensor("t", [1] * n_dims, nbytes=4)]).build()
    if ok:
        assert _read(raw) == []
        return
    assert _read(raw) == [
        Issue(
            "gguf.tensor-dims", Severity.ERROR, f"tensor 't': n_dims {n_dims}, expected 1..4", offset=24 + 9
        )
    ]


@pytest.mark.parametrize("ggml_type", [4, 5, 31, 32, 33, 36, 37, 38, 42, 2**32 - 1])
def test_unknown_ggml_types(ggml_type: int) -> None:
    gg = GGUF(tensors=[Tensor("t", [32], ggml_type=ggml_type), Tensor("u", [8])])
    issues = _read(gg.build())
    assert issues[0] == Issue(
        "gguf.tensor-type", Severity.ERROR, f"tensor 't': ggml type {ggml_type} is unknown", offset=24
    )
    # a tensor of unknown type takes no span: the bytes it would cover are a gap, not an overlap
    assert [i.rule for i in issues if isinstance(i, Issue)] == ["gguf.tensor-type", "gguf.tensor-gap"]


@pytest.mark.parametrize(("ggml_type", "entry"), sorted(GGML_TYPES.items()))
def test_every_ggml_type_size(ggml_type: int, entry: tuple[str, int, int]) -> None:
    _, block, type_size = entry
    for blocks in (1, 3):
        gg = GGUF(
            kv=[("general.alignment", UINT32, 1)],
            alignment=1,
            tensors=[Tensor("t", [block * blocks, 2], ggml_type=ggml_type, nbytes=2 * blocks * type_size)],
        )
        assert _read(gg.build()) == [], (ggml_type, blocks)


def test_ggml_types_table() -> None:
    assert {k: v[0] for k, v in GGML_TYPES.items()} == {
        0: "F32",
        1: "F16",
        2: "Q4_0",
        3: "Q4_1",
        6: "Q5_0",
        7: "Q5_1",
        8: "Q8_0",
        9: "Q8_1",
        10: "Q2_K",
        11: "Q3_K",
        12: "Q4_K",
        13: "Q5_K",
        14: "Q6_K",
        15: "Q8_K",
        16: "IQ2_XXS",
        17: "IQ2_XS",
        18: "IQ3_XXS",
        19: "IQ1_S",
        20: "IQ4_NL",
        21: "IQ3_S",
        22: "IQ2_S",
        23: "IQ4_XS",
        24: "I8",
        25: "I16",
        26: "I32",
        27: "I64",
        28: "F64",
        29: "IQ1_M",
        30: "BF16",
        34: "TQ1_0",
        35: "TQ2_0",
        39: "MXFP4",
        40: "NVFP4",
        41: "Q1_0",
    }


@pytest.mark.parametrize(("dim0", "ok"), [(31, False), (32, True), (33, False), (64, True), (0, True)])
def test_first_dimension_is_a_multiple_of_the_block(dim0: int, ok: bool) -> None:
    raw = GGUF(tensors=[Tensor("q", [dim0, 3], ggml_type=2, nbytes=dim0 // 32 * 18 * 3)]).build()
    if ok:
        assert _read(raw) == []
        return
    assert _read(raw) == [
        Issue(
            "gguf.tensor-size",
            Severity.ERROR,
            f"tensor 'q': first dimension {dim0} is not a multiple of the Q4_0 block size 32",
            offset=24,
        )
    ]


def test_only_the_first_dimension_needs_the_block() -> None:
    assert _read(GGUF(tensors=[Tensor("q", [32, 3, 5], ggml_type=2, nbytes=18 * 15)]).build()) == []


@pytest.mark.parametrize(
    ("dims", "over"),
    [([2**32, 2**31 - 1], False), ([2**32, 2**31], True), ([2**63], True), ([2**62, 2, 1, 1], True)],
)
def test_element_count_at_int64_max(dims: list[int], over: bool) -> None:
    issues = _one(Tensor("t", dims, nbytes=0))
    elements = 1
    for d in dims:
        elements *= d
    if over:
        assert issues == [
            Issue(
                "gguf.tensor-size",
                Severity.ERROR,
                f"tensor 't': dims {dims} hold {elements} elements, more than INT64_MAX",
                offset=24,
            )
        ]
    else:
        assert [i.rule for i in issues if isinstance(i, Issue)] == ["gguf.tensor-out-of-bounds"]


# -- tensor data -----------------------------------------------------------------------------------


def test_data_region_starts_at_the_aligned_end_of_the_infos() -> None:
    gg = GGUF(tensors=[Tensor("t", [8])])
    raw = gg.build()
    info_end = 24 + 8 + 1 + 4 + 8 + 4 + 8
    start = -(-info_end // 32) * 32
    assert len(raw) == start + 32
    assert _read(raw) == []
    assert _read(raw[:-1]) == [
        Issue(
            "gguf.tensor-out-of-bounds",
            Severity.ERROR,
            "tensor 't': data [0, 32) ends past the data region of 31 bytes",
            offset=start,
        )
    ]


def test_data_region_past_the_end_of_the_file() -> None:
    gg = GGUF(tensors=[Tensor("t", [0], nbytes=0)])
    raw = gg.build()
    info_end = 24 + 8 + 1 + 4 + 8 + 4 + 8
    start = -(-info_end // 32) * 32
    assert len(raw) == start
    assert _read(raw) == []  # the data region starts exactly at the end: empty but in bounds
    cut = raw[:info_end]
    assert _read(cut) == [
        Issue(
            "gguf.tensor-out-of-bounds",
            Severity.ERROR,
            f"tensor data would start at {start}, past the end of the {info_end}-byte file",
            offset=info_end,
        )
    ]


def test_no_tensors_means_no_data_checks() -> None:
    raw = _header(0, 1) + _kv("a", UINT8, b"\0")
    assert _read(raw) == []


def test_tensors_of_unknown_type_only_take_no_data() -> None:
    raw = GGUF(tensors=[Tensor("t", [8], ggml_type=4)]).build()[:-10]
    assert [i.rule for i in _read(raw) if isinstance(i, Issue)] == ["gguf.tensor-type"]


@pytest.mark.parametrize(
    ("offset", "rule"), [(28, "gguf.tensor-overlap"), (32, None), (64, "gguf.tensor-gap")]
)
def test_overlap_and_gap_between_two_tensors(offset: int, rule: str | None) -> None:
    gg = GGUF(tensors=[Tensor("a", [8]), Tensor("b", [8], offset=offset)])
    issues = _read(gg.build())
    if offset == 28:
        issues = [i for i in issues if isinstance(i, Issue) and i.rule != "gguf.tensor-alignment"]
    assert [i.rule for i in issues if isinstance(i, Issue)] == ([rule] if rule else [])


def test_overlap_message() -> None:
    gg = GGUF(
        kv=[("general.alignment", UINT32, 4)],
        alignment=4,
        tensors=[Tensor("a", [8]), Tensor("b", [2], offset=4)],
    )
    raw = gg.build()
    start = len(raw) - 32
    assert _read(raw) == [
        Issue(
            "gguf.tensor-overlap",
            Severity.MALICIOUS,
            "tensor 'b': data [4, 12) overlaps tensor 'a' (covered up to 32); tensors must not alias",
            offset=start + 4,
            evidence="b@[4,12) overlaps a",
        )
    ]


def test_overlap_names_the_tensor_that_reached_furthest() -> None:
    gg = GGUF(
        kv=[("general.alignment", UINT32, 4)],
        alignment=4,
        tensors=[
            Tensor("a", [2]),
            Tensor("b", [8], offset=4),
            Tensor("c", [1], offset=12),
            Tensor("d", [1], offset=36),
        ],
    )
    issues = [i for i in _read(gg.build()) if isinstance(i, Issue)]
    assert [(i.rule, i.evidence) for i in issues] == [
        ("gguf.tensor-overlap", "b@[4,36) overlaps a"),
        ("gguf.tensor-overlap", "c@[12,16) overlaps b"),
    ]


@pytest.mark.parametrize(("gap", "flagged"), [(28, False), (31, False), (32, True), (33, True)])
def test_gap_at_the_alignment(gap: int, flagged: bool) -> None:
    gg = GGUF(tensors=[Tensor("a", [1], nbytes=4), Tensor("b", [8], offset=4 + gap)])
    raw = gg.build()
    start = len(raw) - (-(-(4 + gap + 32) // 32) * 32)
    issues = [i for i in _read(raw) if isinstance(i, Issue) and i.rule != "gguf.tensor-alignment"]
    if flagged:
        assert issues == [
            Issue(
                "gguf.tensor-gap",
                Severity.ERROR,
                f"tensor 'b': {gap} unreferenced bytes before it (more than alignment padding)",
                offset=start + 4,
            )
        ]
    else:
        assert issues == []


def test_gap_before_the_first_tensor() -> None:
    gg = GGUF(tensors=[Tensor("a", [8], offset=32)])
    raw = gg.build()
    assert [i.rule for i in _read(raw) if isinstance(i, Issue)] == ["gguf.tensor-gap"]
    assert _read(GGUF(tensors=[Tensor("a", [8], offset=0)]).build()) == []


@pytest.mark.parametrize(("extra", "flagged"), [(0, False), (31, False), (32, True), (33, True)])
def test_trailing_bytes_at_the_alignment(extra: int, flagged: bool) -> None:
    gg = GGUF(tensors=[Tensor("a", [8])], trailing=b"\0" * extra)
    raw = gg.build()
    start = len(raw) - 32 - extra
    issues = _read(raw)
    if flagged:
        assert issues == [
            Issue(
                "gguf.trailing",
                Severity.ERROR,
                f"{extra} bytes after the last tensor (more than alignment padding of 32)",
                offset=start + 32,
            )
        ]
    else:
        assert issues == []


def test_tensors_are_checked_in_offset_order() -> None:
    gg = GGUF(tensors=[Tensor("b", [8], offset=32), Tensor("a", [8], offset=0)])
    assert _read(gg.build()) == []


def test_a_short_tensor_after_a_long_one_does_not_shrink_the_coverage() -> None:
    gg = GGUF(
        kv=[("general.alignment", UINT32, 4)],
        alignment=4,
        tensors=[Tensor("a", [16]), Tensor("b", [1], offset=4), Tensor("c", [1], offset=64)],
    )
    issues = [i for i in _read(gg.build()) if isinstance(i, Issue)]
    # b lies inside a: an overlap; c starts right where a ends: no gap
    assert [(i.rule, i.evidence) for i in issues] == [("gguf.tensor-overlap", "b@[4,8) overlaps a")]


def test_template_key_array_of_numbers_is_bounded_like_any_array() -> None:
    key = "tokenizer.chat_template"
    arr = struct.pack("<IQ", UINT32, 5) + b"\0" * 16
    raw = _header(0, 1) + _kv(key, ARRAY, arr)
    assert _read(raw) == [_count_issue(f"array {key!r} element count", 5, 20, 16, len(raw), 59 + 12)]


def _length_issue(what: str, length: int, remaining: int, size: int, pos: int) -> Issue:
    return Issue(
        "gguf.length-exceeds-file",
        Severity.ERROR,
        f"{what} {length} needs at least {length} bytes but only {remaining} remain (file size {size})",
        offset=pos,
        evidence=f"{what}={length}",
    )


def test_key_length_past_the_end_names_the_key() -> None:
    raw = _header(0, 1) + struct.pack("<Q", 20) + b"k" * 19
    assert _read(raw) == [_length_issue("key length", 20, 19, len(raw), 32)]


def test_template_element_length_past_the_end_names_the_element() -> None:
    key = "tokenizer.chat_template"
    arr = struct.pack("<IQ", STRING, 2) + gstr("ab") + struct.pack("<Q", 9) + b"x" * 8
    raw = _header(0, 1) + _kv(key, ARRAY, arr)
    assert _read(raw)[:1] == [Template(f"{key}[0]", "ab", offset=71)]
    assert _read(raw)[1:] == [
        _length_issue(f"template {key!r} element 1 length", 9, 8, len(raw), len(raw) - 8)
    ]


def test_tensor_name_length_past_the_end_names_the_tensor() -> None:
    raw = _header(1, 0) + struct.pack("<Q", 30) + b"t" * 29
    assert _read(raw) == [_length_issue("tensor name length", 30, 29, len(raw), 32)]


def test_template_key_cut_at_the_first_nul_only() -> None:
    assert is_template_key("tokenizer.chat_template\0a\0b")
    assert is_template_key("tokenizer.chat_template.x\0a\0b")
    assert not is_template_key("general\0tokenizer.chat_template")


@pytest.mark.parametrize(
    "first",
    [Tensor("t", [2**63], nbytes=0), Tensor("t", [31], ggml_type=2, nbytes=0), Tensor("t", [8], ggml_type=4)],
    ids=["too-many-elements", "block", "unknown-type"],
)
def test_tensors_after_a_refused_one_are_still_read(first: Tensor) -> None:
    gg = GGUF(tensors=[first, Tensor("t", [8], offset=0)])
    rules = [i.rule for i in _read(gg.build()) if isinstance(i, Issue)]
    assert rules[1:] == ["gguf.duplicate-tensor"]


def test_out_of_bounds_offset_is_where_the_tensor_begins() -> None:
    gg = GGUF(tensors=[Tensor("a", [8]), Tensor("b", [8])])
    raw = gg.build()[:-1]
    start = len(raw) + 1 - 64
    assert _read(raw) == [
        Issue(
            "gguf.tensor-out-of-bounds",
            Severity.ERROR,
            "tensor 'b': data [32, 64) ends past the data region of 63 bytes",
            offset=start + 32,
        )
    ]


def test_overlap_names_the_first_tensor_reaching_the_covered_end() -> None:
    gg = GGUF(
        kv=[("general.alignment", UINT32, 4)],
        alignment=4,
        tensors=[Tensor("a", [8]), Tensor("b", [7], offset=4), Tensor("c", [1], offset=8)],
    )
    evidence = [i.evidence for i in _read(gg.build()) if isinstance(i, Issue)]
    # b ends where a does (32): a still reaches furthest first, and c is named against it
    assert evidence == ["b@[4,32) overlaps a", "c@[8,12) overlaps a"]


@pytest.mark.parametrize(("first", "second"), [("a", "a\0x\0y"), ("a\0x\0y", "a")])
def test_keys_with_two_nuls_are_cut_at_the_first(first: str, second: str) -> None:
    raw = _header(0, 2) + _kv(first, UINT8, b"\0") + _kv(second, UINT8, b"\0")
    assert [i.rule for i in _read(raw) if isinstance(i, Issue)] == ["gguf.duplicate-key"]


def test_string_value_length_past_the_end_names_the_key() -> None:
    raw = _header(0, 1) + _kv("k", STRING, struct.pack("<Q", 10) + b"v" * 9)
    assert _read(raw) == [_length_issue("string 'k' length", 10, 9, len(raw), len(raw) - 9)]


@pytest.mark.parametrize(
    ("beyond", "flagged"), [(-1, False), (0, False), (31, False), (32, True), (33, True)]
)
def test_trailing_bytes_of_a_file_without_tensors(beyond: int, flagged: bool) -> None:
    """Outside review 22: with no tensors the data region went unchecked, so bytes of any kind
    appended after the metadata (a zip, a pickle) were CLEAN, where one tensor made the same bytes
    ``gguf.trailing``. ``beyond`` counts bytes past the header's padding (-1: the file ends
    unpadded, as gguf-py's own builder and llama.cpp's vocab-only files may)."""
    head = GGUF(kv=[("general.name", STRING, "vocab")]).build()
    padded = -(-len(head) // 32) * 32
    raw = head + b"PK\x03\x04" * 64
    raw = raw[: len(head) if beyond < 0 else padded + beyond]
    issues = _read(raw)
    if flagged:
        assert issues == [
            Issue(
                "gguf.trailing",
                Severity.ERROR,
                f"{beyond} bytes after the header, and no tensor data references them "
                "(more than alignment padding of 32)",
                offset=padded,
            )
        ]
    else:
        assert issues == []


def test_a_vocab_only_file_written_by_gguf_py_is_clean(tmp_path: Path) -> None:
    """gguf-py's writer pads the header of a file without tensors to the alignment: no finding."""
    import gguf

    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list(["a", "b", "c"])
    writer.add_chat_template(TEMPLATE)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    raw = path.read_bytes()
    assert len(raw) % 32 == 0  # not vacuous: padded, with nothing after
    assert [f for f in _read(raw) if isinstance(f, Issue)] == []


def test_a_file_of_many_templates_meets_the_files_deadline(tmp_path: Path) -> None:
    """Outside review 22: every string value that looks like Jinja is analysed, and the reader
    checked the file's deadline once per 1024 metadata keys, so 24 slow templates (a list of
    30,000 items each: seconds of analysis apiece) ran for minutes past max_seconds_per_file.
    The deadline is checked before each template now: at most one template's analysis past it."""
    import time

    import airlock

    template = "{{ [" + "1," * 30_000 + "] }}"
    kv = [(f"x.t{i}", STRING, template) for i in range(24)]
    path = tmp_path / "many.gguf"
    path.write_bytes(GGUF(kv=kv).build())
    started = time.monotonic()
    report = airlock.scan(path, limits=dataclasses.replace(DEFAULT_LIMITS, max_seconds_per_file=1.0))
    took = time.monotonic() - started
    messages = [f.message for f in report.findings()]
    assert any("limit max_seconds_per_file" in m for m in messages), messages
    assert took < 45, took
