"""Property tests: mangled archives only ever raise FormatError, and never expand past the limits."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlock._formats.base import Nested, PickleStream, ReadContext
from airlock._formats.zip import member_bytes, member_head, parse_zip
from airlock._formats.zip_reader import ZipReader
from airlock.errors import FormatError
from airlock.limits import DEFAULT_LIMITS
from tests.formats.zipcraft import Entry, build_zip

_LIMITS = DEFAULT_LIMITS.replace(max_decompressed_bytes=4096, max_archive_members=64)


def _zipfile_seed() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("arch/data.pkl", b"\x80\x02}q\x00.", compress_type=zipfile.ZIP_STORED)
        zf.writestr("arch/code.py", b"def f(x):\n    return x\n" * 20, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


SEEDS = [
    _zipfile_seed(),
    build_zip(
        [Entry(b"m/a", b"abc" * 30, zip64=True, descriptor=True), Entry(b"m/b", b"x" * 300, method=8)],
        zip64=True,
    ),
    build_zip([Entry(b"m/a", b"data"), Entry(b"m/a", b"data2", local_name=b"zz")], comment=b"hi"),
]


def _exercise(raw: bytes) -> None:
    try:
        listing = parse_zip(memoryview(raw), _LIMITS)
    except FormatError:
        return
    assert len(listing.members) <= _LIMITS.max_archive_members
    for member in listing.members:
        assert member.data_offset + member.compressed_size <= len(raw)
        try:
            assert len(member_head(listing, member, 64)) <= 64
            out = member_bytes(listing, member, _LIMITS)
        except FormatError:
            continue
        assert len(out) <= _LIMITS.max_decompressed_bytes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=8),
)
def test_bit_flips(seed: bytes, flips: list[tuple[int, int]]) -> None:
    raw = bytearray(seed)
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    _exercise(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(seed=st.sampled_from(SEEDS), cut=st.integers(0, 10_000), tail=st.binary(max_size=64))
def test_truncation_and_junk(seed: bytes, cut: int, tail: bytes) -> None:
    _exercise(seed[: cut % (len(seed) + 1)] + tail)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_with_an_end_record(noise: bytes) -> None:
    _exercise(noise)
    _exercise(noise + b"PK\x05\x06" + noise[:18].ljust(18, b"\x00"))


_TORCH_LIKE = build_zip(
    [
        Entry(b"arch/data.pkl", b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01K\x01s."),
        Entry(b"arch/byteorder", b"little"),
        Entry(b"arch/data/0", b"\x80\x02" + bytes(range(64))),
        Entry(b"arch/code/__torch__.py", b"def forward(self, x):\n  return torch.save(x, 'p')\n", method=8),
        Entry(b"arch/version", b"3\n"),
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from([*SEEDS, _TORCH_LIKE]),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=6),
    cut=st.integers(0, 10_000),
)
def test_zip_reader_only_raises_format_error(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    raw = bytearray(seed)
    for at, mask in flips:
        raw[at % len(raw)] ^= mask
    ctx = ReadContext(limits=_LIMITS, file_path=Path("x.zip"), root=Path())
    for candidate in (bytes(raw), bytes(raw[: cut % (len(raw) + 1)])):
        try:
            for fact in ZipReader().read(memoryview(candidate), ctx):
                if isinstance(fact, Nested | PickleStream):
                    assert len(fact.data) <= max(_LIMITS.max_decompressed_bytes, len(candidate))
        except FormatError:
            pass
