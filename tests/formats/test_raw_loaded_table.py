"""``raw_loaded`` (asked for every tensor storage of a checkpoint) tries only the formats that may
start with the content's first byte; the answer is the one trying every raw-loaded format gives."""

from __future__ import annotations

import random

from airlock._formats import registry
from airlock._formats.registry import raw_loaded


def _every_format(head: bytes, size: int) -> bool:
    return any(f.may_match(head) and f.reader().sniff(head, size) for f in registry._RAW_LOADED)


def _heads() -> list[bytes]:
    rng = random.Random(10)  # noqa: S311 - seeded test data
    heads = [b"", b"\x00" * 64, b"\x00\x00\x80?" * 16]
    for fmt in registry._RAW_LOADED:
        for magic in getattr(fmt.may_match, "magic", ()):
            # the magic itself, a real-looking start, a near miss in the last byte, a prefix
            heads += [magic, magic + bytes(60), magic[:-1] + bytes([magic[-1] ^ 1]) + bytes(60), magic[:1]]
    heads += [bytes([b]) + rng.randbytes(63) for b in range(256)]
    heads += [rng.randbytes(64) for _ in range(300)]
    return heads


def test_the_first_byte_table_answers_as_every_format_does() -> None:
    found = 0
    for head in _heads():
        for size in (len(head), 1 << 20):
            expected = _every_format(head, size)
            assert raw_loaded(head, size) is expected, (head[:8], size)
            found += expected
    assert found > 10  # the magics themselves are recognised: the comparison is not all False


def test_every_raw_loaded_format_is_reachable_from_its_first_bytes() -> None:
    for fmt in registry._RAW_LOADED:
        for magic in getattr(fmt.may_match, "magic", ()):
            assert fmt in registry._raw_loaded_from(magic[:1]), (fmt.name, magic)
