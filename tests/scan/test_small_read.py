"""Files up to READ_WHOLE_BYTES are read in one call instead of mapped: the same findings on both
sides of the boundary, and a file that is shorter than its size said is an error, never clean."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import airlock
from airlock._scan import engine
from airlock._scan.engine import READ_WHOLE_BYTES
from airlock.results import Verdict

# GLOBAL os.system, then SHORT_BINUNICODE-free padding: a protocol-0 string literal of any length
_HEAD = b"cos\nsystem\n(S'"
_TAIL = b"'\ntR."


def _malicious_of_size(path: Path, size: int) -> Path:
    pad = size - len(_HEAD) - len(_TAIL)
    path.write_bytes(_HEAD + b"t" * pad + _TAIL)
    assert path.stat().st_size == size
    return path


@pytest.mark.parametrize("size", [READ_WHOLE_BYTES - 1, READ_WHOLE_BYTES, READ_WHOLE_BYTES + 1])
def test_the_same_findings_read_or_mapped(tmp_path: Path, size: int) -> None:
    report = airlock.scan(_malicious_of_size(tmp_path / "m.pkl", size))
    (only,) = report.files
    assert only.verdict is Verdict.MALICIOUS
    assert [(f.rule, f.callable) for f in only.findings] == [("pickle.dangerous-global", "os.system")]
    assert only.size == size


def test_a_short_read_is_none(tmp_path: Path) -> None:
    path = tmp_path / "ten"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert engine._read_exactly(fd, 10) == b"0123456789"
        os.lseek(fd, 0, os.SEEK_SET)
        assert engine._read_exactly(fd, 11) is None  # the file ended before its fstat size
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [READ_WHOLE_BYTES, READ_WHOLE_BYTES + 1])
@pytest.mark.parametrize("offset", [0, 1, 5])
def test_a_callers_descriptor_offset_neither_decides_nor_moves(
    tmp_path: Path, size: int, offset: int
) -> None:
    """Review finding 2: ``scan_fd`` dups the caller's descriptor (one shared offset). The small-file
    read used ``os.read``: a descriptor not at 0 was reported as a file that shrank (ERROR where the
    mapped path, and the code before, judged the content), and the scan moved the caller's offset
    to the end (a caller reading the model after the gate read nothing)."""
    from airlock._scan.api import scan_fd

    path = _malicious_of_size(tmp_path / "m.pkl", size)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        report = scan_fd(fd, path)
        assert os.lseek(fd, 0, os.SEEK_CUR) == offset
    finally:
        os.close(fd)
    (only,) = report.files
    assert only.verdict is Verdict.MALICIOUS
    assert [(f.rule, f.callable) for f in only.findings] == [("pickle.dangerous-global", "os.system")]
