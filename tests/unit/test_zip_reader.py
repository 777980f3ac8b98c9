"""The zip reader fact by fact, on archives built byte by byte (tests/formats/zipcraft.py): what a
torch archive's layout is (and its near misses), which member becomes a pickle, a storage, a
record or a nested file, the records' exact forms, TorchScript code, CRC checks and the
decompression budget at N-1, N and N+1, each with its exact rule, message, offset and role.
"""

from __future__ import annotations

import dataclasses
import pickle
import zlib
from pathlib import Path

import pytest

from airlock._formats.base import Issue, Nested, PickleStream, ReadContext
from airlock._formats.zip import parse_zip
from airlock._formats.zip_reader import ZipReader
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Severity
from tests.formats.zipcraft import Entry, build_zip

PKL = pickle.dumps({"a": 1}, protocol=2)
DEFLATED = 8


class _Clock:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def _facts(raw: bytes, clock: _Clock | None = None, **limits: int) -> list[object]:
    ctx = ReadContext(
        limits=dataclasses.replace(DEFAULT_LIMITS, **limits),
        file_path=Path("m.pt"),
        root=Path(),
        check_time=clock or (lambda: None),
    )
    return [_plain(f) for f in ZipReader().read(memoryview(raw), ctx)]


def _plain(fact: object) -> object:
    """Facts with their bytes as bytes (memoryviews do not compare by value with bytes)."""
    if isinstance(fact, PickleStream):
        return fact._replace(data=bytes(fact.data))  # type: ignore[arg-type]
    if isinstance(fact, Nested):
        return fact._replace(data=bytes(fact.data))
    return fact


def _members(raw: bytes) -> dict[str, tuple[int, int]]:
    """name -> (header offset, data offset) as the directory parser lists them."""
    listing = parse_zip(memoryview(raw), DEFAULT_LIMITS)
    return {m.name: (m.header_offset, m.data_offset) for m in listing.members}


def _main(name: str, data: bytes = PKL, *, lenient: bool = False, role: str = "main") -> PickleStream:
    return PickleStream(data, 0, f"{role} {name}", member=name, lenient=lenient)  # type: ignore[arg-type]


def test_sniff_and_name() -> None:
    assert ZipReader().sniff(build_zip([Entry(b"a", b"x")])[:8], 100)
    assert not ZipReader().sniff(b"PK\x03\x05", 4)
    assert ZipReader().name == "zip"


# -- layout ----------------------------------------------------------------------------------------


def test_plain_zip_members_are_nested_files() -> None:
    raw = build_zip([Entry(b"a.txt", b"hello"), Entry(b"dir/", b""), Entry(b"b.npy", b"\x93NUMPY")])
    assert _facts(raw) == [Nested("a.txt", b"hello"), Nested("b.npy", b"\x93NUMPY")]


def _parse_calls(raw: bytes) -> int:
    clock = _Clock()
    parse_zip(memoryview(raw), DEFAULT_LIMITS, clock)
    return clock.calls


def test_plain_zip_loop_checks_the_clock_for_every_member() -> None:
    clock = _Clock()
    raw = build_zip([Entry(b"a", b"1"), Entry(b"b/", b""), Entry(b"c", b"2")])
    _facts(raw, clock)
    assert clock.calls == _parse_calls(raw) + 3


def test_torch_archive_members() -> None:
    raw = build_zip(
        [
            Entry(b"arc/data.pkl", PKL),
            Entry(b"arc/data/", b""),
            Entry(b"arc/data/0", b"\x00" * 16),
            Entry(b"arc/data/1", PKL),
            Entry(b"arc/byteorder", b"little"),
            Entry(b"arc/version", b"3\n"),
            Entry(b"arc/extra.txt", b"text"),
            Entry(b"arc/data/sub/2", PKL),
        ]
    )
    assert _facts(raw) == [
        _main("arc/data.pkl"),
        _main("arc/data/1", lenient=True, role="storage"),
        Nested("arc/extra.txt", b"text"),
        Nested("arc/data/sub/2", PKL),
    ]


def test_torch_loop_checks_the_clock_for_every_member() -> None:
    clock = _Clock()
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/x/", b""), Entry(b"a/y", b"1")])
    _facts(raw, clock)
    assert clock.calls == _parse_calls(raw) + 3


@pytest.mark.parametrize("name", [b"arc/DATA.PKL", b"arc/Data.pkl", b"arc/data.PKL"])
def test_main_pickle_name_is_case_insensitive(name: bytes) -> None:
    assert _facts(build_zip([Entry(name, PKL)])) == [_main(name.decode())]


def test_every_copy_of_the_main_pickle_is_the_main_pickle() -> None:
    raw = build_zip([Entry(b"arc/data.pkl", PKL), Entry(b"arc/DATA.pkl", b"x"), Entry(b"arc/data.pkl", b"y")])
    facts = [f for f in _facts(raw) if not isinstance(f, Issue)]
    assert facts == [_main("arc/data.pkl"), _main("arc/DATA.pkl", b"x"), _main("arc/data.pkl", b"y")]


@pytest.mark.parametrize(
    "entries",
    [
        [Entry(b"data.pkl", PKL)],  # no top folder
        [Entry(b"arc/x", b"1"), Entry(b"other/data.pkl", PKL)],  # two top folders
        [Entry(b"arc/data.pkl", PKL), Entry(b"arcx/y", b"1")],  # a folder named with the prefix
        [Entry(b"arc/data.pkl", PKL), Entry(b"arc", b"1")],  # the prefix without its slash
        [Entry(b"arc/data.pkl.bak", PKL)],
        [Entry(b"arc/sub/data.pkl", PKL)],
        [Entry(b"arc/xdata.pkl", PKL)],
    ],
)
def test_not_a_torch_layout_is_a_plain_zip(entries: list[Entry]) -> None:
    raw = build_zip(entries)
    facts = [f for f in _facts(raw) if not isinstance(f, Issue)]
    assert facts == [Nested(e.name.decode(), e.data) for e in entries if not e.name.endswith(b"/")]


def test_empty_zip() -> None:
    assert _facts(build_zip([])) == []


def test_torch_layout_prefix_comes_from_the_first_member() -> None:
    raw = build_zip([Entry(b"a/b/data.pkl", b"1"), Entry(b"a/data.pkl", PKL)])
    assert _facts(raw) == [Nested("a/b/data.pkl", b"1"), _main("a/data.pkl")]


def test_keras_archive_is_read_as_keras() -> None:
    # Keras' reader takes over (config.json holds a class_name): its members are not nested files here
    raw = build_zip([Entry(b"config.json", b'{"class_name": "Sequential", "config": {}}'),
                     Entry(b"model.weights.h5", b"x")])  # fmt: skip
    assert all(not isinstance(f, Nested) for f in _facts(raw))
    near = b'{"class_nam": "Sequential", "config": {}}'
    raw = build_zip([Entry(b"config.json", near), Entry(b"model.weights.h5", b"x")])
    assert _facts(raw) == [Nested("config.json", near), Nested("model.weights.h5", b"x")]


def test_storage_that_does_not_look_like_a_pickle_yields_nothing() -> None:
    # b"\x80\x02Vabc" would be a pickle if the member went on (a text line in progress); it ends there
    for data in (b"weights!", b"\x80\x02" + b"\xff" * 10, b"", b"\x80\x02Vabc"):
        raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/data/0", data)])
        assert _facts(raw) == [_main("a/data.pkl")], data


def test_storage_whose_head_is_cut_is_judged_by_its_full_size() -> None:
    # only the first 4096 bytes are sniffed: a text line still going at their end may be a pickle
    data = b"\x80\x02V" + b"a" * 5000
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/data/0", data)])
    assert _facts(raw) == [_main("a/data.pkl"), _main("a/data/0", data, lenient=True, role="storage")]


def test_deflated_storage_that_looks_like_a_pickle() -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/data/0", PKL, method=DEFLATED)])
    assert _facts(raw) == [_main("a/data.pkl"), _main("a/data/0", lenient=True, role="storage")]


def test_storage_whose_head_cannot_be_decompressed() -> None:
    raw = build_zip(
        [Entry(b"a/data.pkl", PKL), Entry(b"a/data/0", PKL, method=DEFLATED, packed=b"\xff" * 20)]
    )
    assert _facts(raw) == [
        _main("a/data.pkl"),
        Issue(
            "format.error",
            Severity.ERROR,
            "zip: member 'a/data/0': deflate stream is corrupt: Error -3 while decompressing data: invalid block type",
        ),
    ]


def test_member_that_cannot_be_decompressed() -> None:
    raw = build_zip([Entry(b"x.bin", b"hello", method=DEFLATED, packed=b"\xff" * 20)])
    (issue,) = _facts(raw)
    assert isinstance(issue, Issue)
    assert (issue.rule, issue.severity) == ("format.error", Severity.ERROR)
    assert issue.message.startswith("zip: member 'x.bin': ")


# -- records ---------------------------------------------------------------------------------------

GOOD_RECORDS = [
    ("byteorder", b"little"), ("byteorder", b"big"), ("version", b"3"), ("version", b"3\n"),
    ("version", b"1234"), ("version", b"1234\n"), (".format_version", b"1"), (".format_version", b"9999\n"),
    (".storage_alignment", b"64"), (".storage_alignment", b"12345678\n"), (".data/version", b"3\n"),
    (".data/version", b"1234"), (".data/serialization_id", b"0123456789abcdefABCDEF"),
    (".data/serialization_id", b"a" * 64),
]  # fmt: skip

BAD_RECORDS = [
    ("byteorder", b"Little"), ("byteorder", b"little\n"), ("byteorder", b"littl"), ("byteorder", b"middle"),
    ("byteorder", b"bigbig"), ("byteorder", b""), ("version", b"12345"), ("version", b"3\n\n"), ("version", b""),
    ("version", b"x"), ("version", b"\n"), (".format_version", b"12345"), (".format_version", b"1a"),
    (".storage_alignment", b"123456789"), (".storage_alignment", b"64 "), (".data/version", b"12345\n"),
    (".data/serialization_id", b"a" * 63 + b"\n"), (".data/serialization_id", b"g"), (".data/serialization_id", b"ab\n"),
    (".data/serialization_id", b""),
]  # fmt: skip


@pytest.mark.parametrize(("rel", "content"), GOOD_RECORDS)
@pytest.mark.parametrize("method", [0, DEFLATED])
def test_records_as_torch_writes_them(rel: str, content: bytes, method: int) -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(f"a/{rel}".encode(), content, method=method)])
    assert _facts(raw) == [_main("a/data.pkl")]


@pytest.mark.parametrize(("rel", "content"), BAD_RECORDS)
@pytest.mark.parametrize("method", [0, DEFLATED])
def test_records_torch_does_not_write(rel: str, content: bytes, method: int) -> None:
    name = f"a/{rel}"
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(name.encode(), content, method=method)])
    assert _facts(raw) == [
        _main("a/data.pkl"),
        Issue(
            "torch.bad-record",
            Severity.SUSPICIOUS,
            f"torch record {name!r} holds {content!r}, not what torch writes",
            offset=_members(raw)[name][0],
        ),
        Nested(name, content),
    ]


@pytest.mark.parametrize("rel", ["Version", "versions", "x/version", ".data/Version", "byteorde"])
def test_near_miss_record_names_are_plain_members(rel: str) -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(f"a/{rel}".encode(), b"junk junk")])
    assert _facts(raw) == [_main("a/data.pkl"), Nested(f"a/{rel}", b"junk junk")]


@pytest.mark.parametrize(("size", "method"), [(64, 0), (64, DEFLATED), (65, 0), (65, DEFLATED)])
def test_record_size_at_64_bytes(size: int, method: int) -> None:
    content = b"1" * size
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/version", content, method=method)])
    detail = f"holds {content!r}" if size <= 64 else f"is {size} bytes (method {method})"
    assert _facts(raw) == [
        _main("a/data.pkl"),
        Issue(
            "torch.bad-record",
            Severity.SUSPICIOUS,
            f"torch record 'a/version' {detail}, not what torch writes",
            offset=_members(raw)["a/version"][0],
        ),
        Nested("a/version", content),
    ]


def test_deflated_record_within_the_budget() -> None:
    # a deflated record is decompressed through the archive budget: 4 bytes fit a budget of 4
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/version", b"1234", method=DEFLATED)])
    assert _facts(raw, max_total_decompressed_bytes=4) == [_main("a/data.pkl")]


# -- TorchScript -----------------------------------------------------------------------------------


def test_torchscript_code_and_constants() -> None:
    code = b"def forward(self, x):\n    return torch.ops.aten.add(x, x)\n"
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/code/__torch__.py", code),
                     Entry(b"a/constants.pkl", PKL)])  # fmt: skip
    assert _facts(raw) == [
        _main("a/data.pkl"),
        Nested("a/constants.pkl", PKL),
        Issue(
            "torchscript.code",
            Severity.SUSPICIOUS,
            "TorchScript archive: torch.jit.load compiles and runs its code (a/code/__torch__.py); "
            "load it only inside the sandbox",
            evidence="a/code/__torch__.py",
        ),
    ]


def test_constants_alone_make_torchscript() -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/constants.pkl", PKL)])
    assert _facts(raw)[-1] == Issue(
        "torchscript.code",
        Severity.SUSPICIOUS,
        "TorchScript archive: torch.jit.load compiles and runs its code (no code files); load it only "
        "inside the sandbox",
        evidence=None,
    )


def test_code_folder_with_other_files_is_torchscript() -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/code/x.debug_pkl", b"zz"),
                     Entry(b"a/code/y.pyc", b"yy")])  # fmt: skip
    facts = _facts(raw)
    assert facts[:3] == [
        _main("a/data.pkl"),
        Nested("a/code/x.debug_pkl", b"zz"),
        Nested("a/code/y.pyc", b"yy"),
    ]
    assert isinstance(facts[3], Issue)
    assert facts[3].rule == "torchscript.code"
    assert facts[3].evidence is None


@pytest.mark.parametrize("rel", ["xcode/a.py", "constants.pkl.bak", "Code/a.py", "code"])
def test_near_misses_are_not_torchscript(rel: str) -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(f"a/{rel}".encode(), b"x = 1\n")])
    assert all(not (isinstance(f, Issue) and f.rule == "torchscript.code") for f in _facts(raw))


def test_at_most_ten_code_files_are_named() -> None:
    names = [f"a/code/m{i:02d}.py" for i in range(12)]
    raw = build_zip([Entry(b"a/data.pkl", PKL), *[Entry(n.encode(), b"x = 1\n") for n in names]])
    issue = _facts(raw)[1]
    assert isinstance(issue, Issue)
    listed = ", ".join(names[:10]) + " and 2 more"
    assert issue.message == (
        f"TorchScript archive: torch.jit.load compiles and runs its code ({listed}); load it only inside the sandbox"
    )
    assert issue.evidence == listed
    ten = build_zip([Entry(b"a/data.pkl", PKL), *[Entry(n.encode(), b"x = 1\n") for n in names[:10]]])
    issue = _facts(ten)[1]
    assert isinstance(issue, Issue)
    assert issue.evidence == ", ".join(names[:10])


def test_dangerous_operator_in_code() -> None:
    code = b"def forward(self):\n    x = 1\n    return torch.ops.aten.save(x, 'f')\n"
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/code/m.py", code)])
    facts = _facts(raw)
    danger = [f for f in facts if isinstance(f, Issue) and f.rule == "torchscript.dangerous-op"]
    assert danger == [
        Issue(
            "torchscript.dangerous-op",
            Severity.MALICIOUS,
            f"TorchScript code 'a/code/m.py' line 3 uses {danger[0].callable}: {danger[0].message.split(': ', 1)[1]}",
            offset=_members(raw)["a/code/m.py"][1],
            callable=danger[0].callable,
            evidence="return torch.ops.aten.save(x, 'f')",
        )
    ]
    assert danger[0].callable == "aten::save"
    assert danger[0].message.startswith("TorchScript code 'a/code/m.py' line 3 uses aten::save: ")


def test_code_that_is_not_utf8() -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/code/m.py", b"x = '\xff'\n"),
                     Entry(b"a/code/n.py", b"torch.ops.aten.save(x)\n")])  # fmt: skip
    facts = _facts(raw)
    assert facts[2] == Issue(
        "format.error", Severity.ERROR, "TorchScript code 'a/code/m.py' is not UTF-8 text"
    )
    # the next code file is still read
    assert isinstance(facts[3], Issue)
    assert facts[3].rule == "torchscript.dangerous-op"


def test_code_with_a_bad_crc_is_still_read() -> None:
    code = b"torch.ops.aten.save(x)\n"
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/code/m.py", code, crc=1)])
    rules = [f.rule for f in _facts(raw) if isinstance(f, Issue)]
    assert rules == ["torchscript.code", "zip.bad-crc", "torchscript.dangerous-op"]


# -- CRC and budget --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [b"x.bin", b"a/data.pkl", b"a/data/0", b"a/x.bin"])
def test_bad_crc(name: bytes) -> None:
    content = PKL
    entries = [Entry(name, content, crc=0x12345678)]
    if name != b"a/data.pkl" and name.startswith(b"a/"):
        entries.insert(0, Entry(b"a/data.pkl", PKL))
    raw = build_zip(entries)
    crc = zlib.crc32(content)
    issue = Issue(
        "zip.bad-crc",
        Severity.SUSPICIOUS,
        f"member {name.decode()!r}: CRC 0x{crc:08x} does not match the recorded 0x12345678; torch ignores it, "
        "zipfile refuses the member",
        offset=_members(raw)[name.decode()][0],
    )
    facts = _facts(raw)
    assert issue in facts
    assert facts[facts.index(issue) + 1] in (
        Nested(name.decode(), content),
        _main(name.decode()),
        _main(name.decode(), lenient=True, role="storage"),
    )


def test_stored_record_is_not_crc_checked() -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/version", b"3\n", crc=7)])
    assert _facts(raw) == [_main("a/data.pkl")]


def test_good_crc_of_zero_length_member() -> None:
    assert _facts(build_zip([Entry(b"e", b"")])) == [Nested("e", b"")]


@pytest.mark.parametrize(("budget", "ok"), [(9, False), (10, True), (11, True)])
def test_total_decompressed_budget_at_n_minus_1_n_n_plus_1(budget: int, ok: bool) -> None:
    raw = build_zip([Entry(b"a", b"x" * 4, method=DEFLATED), Entry(b"s", b"stored-bytes"),
                     Entry(b"b", b"y" * 6, method=DEFLATED)])  # fmt: skip
    facts = _facts(raw, max_total_decompressed_bytes=budget)
    assert facts[:2] == [Nested("a", b"x" * 4), Nested("s", b"stored-bytes")]
    if ok:
        assert facts[2:] == [Nested("b", b"y" * 6)]
        return
    assert facts[2:] == [
        Issue(
            "limit.exceeded",
            Severity.ERROR,
            f"member 'b': member 'b' would bring the archive's decompressed total to 10 bytes, more than {budget} "
            "(limit max_total_decompressed_bytes)",
            offset=_members(raw)["b"][0],
        )
    ]


def test_budget_counts_the_bytes_actually_decompressed() -> None:
    # the declared size is what the next member is checked against, the real length what is spent
    raw = build_zip([Entry(b"a", b"x" * 4, method=DEFLATED), Entry(b"b", b"y" * 4, method=DEFLATED)])
    assert len(_facts(raw, max_total_decompressed_bytes=8)) == 2
    facts = _facts(raw, max_total_decompressed_bytes=7)
    assert isinstance(facts[1], Issue)
    assert "to 8 bytes, more than 7" in facts[1].message


def test_stored_members_cost_nothing() -> None:
    raw = build_zip([Entry(b"a", b"x" * 50), Entry(b"b", b"y" * 4, method=DEFLATED)])
    assert _facts(raw, max_total_decompressed_bytes=4) == [Nested("a", b"x" * 50), Nested("b", b"y" * 4)]


def test_member_limit_is_an_issue_at_the_member() -> None:
    raw = build_zip([Entry(b"big", b"z" * 5000, method=DEFLATED), Entry(b"ok", b"fine")])
    facts = _facts(raw, max_decompressed_bytes=4999)
    assert isinstance(facts[0], Issue)
    assert facts[0].rule == "limit.exceeded"
    assert facts[0].severity is Severity.ERROR
    assert facts[0].message.startswith("member 'big': ")
    assert facts[1:] == [Nested("ok", b"fine")]
    assert _facts(raw, max_decompressed_bytes=5000)[0] == Nested("big", b"z" * 5000)


def test_stored_member_with_mismatched_sizes_is_a_format_error_issue() -> None:
    raw = build_zip([Entry(b"x", b"abc", uncompressed_size=4)])
    facts = _facts(raw)
    issues = [f for f in facts if isinstance(f, Issue) and f.rule == "format.error"]
    assert issues and issues[0].message.startswith("zip: stored member 'x': compressed size 3 differs")
    assert issues[0].severity is Severity.ERROR


@pytest.mark.parametrize(
    ("rel", "data", "declared"),
    [(".data/serialization_id", b"a" * 64 + b"hidden bytes", 64), ("version", b"3\n" + b"x" * 30, 2)],
)
def test_stored_record_with_more_bytes_than_it_declares(rel: str, data: bytes, declared: int) -> None:
    # regression: the record's first bytes matched what torch writes and the rest went unread, with
    # no finding at all; a stored member whose sizes disagree is refused everywhere else
    name = f"a/{rel}"
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(name.encode(), data, uncompressed_size=declared)])
    header = _members(raw)[name][0]
    assert _facts(raw) == [
        _main("a/data.pkl"),
        Issue(
            "torch.bad-record",
            Severity.SUSPICIOUS,
            f"torch record {name!r} is stored as {len(data)} bytes but declares {declared}, not what torch writes",
            offset=header,
        ),
        Issue(
            "format.error",
            Severity.ERROR,
            f"zip: stored member {name!r}: compressed size {len(data)} differs from uncompressed size {declared}",
            offset=header,
        ),
    ]


def test_deflated_record_spends_the_budget() -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/version", b"1234", method=DEFLATED),
                     Entry(b"a/x", b"y" * 6, method=DEFLATED)])  # fmt: skip
    assert _facts(raw, max_total_decompressed_bytes=10)[1:] == [Nested("a/x", b"y" * 6)]
    facts = _facts(raw, max_total_decompressed_bytes=9)
    assert isinstance(facts[1], Issue)
    assert facts[1].message == (
        "member 'a/x': member 'a/x' would bring the archive's decompressed total to 10 bytes, more than 9 "
        "(limit max_total_decompressed_bytes)"
    )


def test_storage_head_error_keeps_its_offset() -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/data/0", PKL, method=14, packed=b"\x09\x14")])
    assert _facts(raw) == [
        _main("a/data.pkl"),
        Issue(
            "format.error",
            Severity.ERROR,
            "zip: member 'a/data/0': LZMA data is shorter than its 9-byte header",
            offset=_members(raw)["a/data/0"][1],
        ),
    ]


def test_budget_adds_up_every_member() -> None:
    raw = build_zip([Entry(n, b"x" * 4, method=DEFLATED) for n in (b"a", b"b", b"c")])
    assert len([f for f in _facts(raw, max_total_decompressed_bytes=12) if isinstance(f, Nested)]) == 3
    facts = _facts(raw, max_total_decompressed_bytes=11)
    assert isinstance(facts[2], Issue)
    assert "decompressed total to 12 bytes, more than 11" in facts[2].message


def test_storage_key_with_a_slash_is_a_nested_member() -> None:
    raw = build_zip([Entry(b"a/data.pkl", PKL), Entry(b"a/data//0", b"weights!")])
    assert _facts(raw) == [_main("a/data.pkl"), Nested("a/data//0", b"weights!")]


def test_pickle_streams_are_memoryviews_even_when_decompressed() -> None:
    ctx = ReadContext(limits=DEFAULT_LIMITS, file_path=Path("m.pt"), root=Path())
    raw = build_zip([Entry(b"a/data.pkl", PKL, method=DEFLATED)])
    (fact,) = ZipReader().read(memoryview(raw), ctx)
    assert isinstance(fact, PickleStream)
    assert isinstance(fact.data, memoryview)
    assert bytes(fact.data) == PKL
