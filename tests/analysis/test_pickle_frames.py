"""The FRAME differential: an opcode that crosses the end of a FRAME is read from other bytes by a
file reader without ``peek`` (``torch.load`` of a zip checkpoint, ``pickle.load(io.BytesIO)``)
than by ``pickle.loads``. airlock analyses both readings; the verdict is the worse one.

Each fixture is proven with the real loaders in subprocesses: the bytes readers do not run the
payload, the peek-less readers (and torch.load) do.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import pytest

import airlock
from airlock import Severity, Verdict
from airlock._analysis.pickle_vm import Machine
from airlock._formats.pickle_ops import file_reading
from airlock._render.text import render as render_text
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Finding
from tests.fixtures.loaders import runs_payload

_STEP = "as a file reader without peek reads it (torch.load of a zip checkpoint, pickle.load(io.BytesIO))"


def _frame(content: bytes) -> bytes:
    return b"\x95" + struct.pack("<Q", len(content)) + content


def _payload(marker: Path) -> bytes:
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def line_crossing(marker: Path) -> tuple[bytes, int]:
    """GLOBAL's module line starts in the frame: ``pickle.loads`` reads ``xxos``, a file reader
    drops ``xx`` and imports ``os``. Returns the pickle and the offset of the GLOBAL opcode."""
    head = b"\x80\x04" + _frame(b"cxx")
    return head + _payload(marker)[1:], len(head) - 3


def string_crossing(marker: Path) -> tuple[bytes, int]:
    """A BINUNICODE whose text runs past the frame: ``pickle.loads`` reads the payload as data
    (harmless: a string and bytes), a file reader skips the rest of the frame, reads its string
    from after it and runs the payload. (BINBYTES bodies are read in order by both.)"""
    payload = _payload(marker)
    n = 64
    in_frame = b"X" + struct.pack("<I", n) + b"AAAAA"
    rest = b"Z" * (n - 5) + b"B" + struct.pack("<I", len(payload)) + payload + b"00N."
    head = b"\x80\x04" + _frame(in_frame)
    return head + rest, len(head) + n


FIXTURES = {"line-crossing": line_crossing, "string-crossing": string_crossing}


def _dangerous(report: airlock.Report) -> Finding:
    hits = [f for f in report.findings() if f.rule == "pickle.dangerous-global" and f.callable == "os.system"]
    assert len(hits) == 1, render_text(report)
    return hits[0]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_both_readings_are_analysed(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data, offset = FIXTURES[name](marker)
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    # The readers disagree: in-order readers do not run it, peek-less file readers do.
    assert not runs_payload("pickle.loads", path, marker)
    assert not runs_payload("pickle.load(open)", path, marker)
    assert runs_payload("pickle.load(BytesIO)", path, marker)
    assert runs_payload("pickle.load(unbuffered)", path, marker)

    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    finding = _dangerous(report)
    assert finding.severity is Severity.MALICIOUS
    assert finding.location.members == (_STEP,)
    assert finding.location.offset == offset
    assert data[offset : offset + 1] == b"c"  # the offset is in the file, not in the reading
    differential = [f for f in report.findings() if f.rule == "pickle.frame-differential"]
    assert len(differential) == 1 and differential[0].severity is Severity.SUSPICIOUS
    assert not marker.exists()


def _torch_checkpoint(folder: Path, data_pkl: bytes) -> Path:
    import torch

    original = folder / "orig.pt"
    torch.save({"a": 1}, original)
    path = folder / "model.pt"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            content = data_pkl if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info.filename, content)
    original.unlink()
    return path


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_torch_load_runs_the_file_reading_and_airlock_names_it(name: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    data, offset = FIXTURES[name](marker)
    path = _torch_checkpoint(tmp_path, data)
    assert runs_payload("torch.load", path, marker), "torch.load does not run the fixture"
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    finding = _dangerous(report)
    assert finding.location.members == ("orig/data.pkl", _STEP)
    assert finding.location.offset == offset
    assert not marker.exists()


def mixed_crossing(marker: Path) -> bytes:
    """Two crossings, read differently by a buffered file (``pickle.load(open(path))``,
    ``numpy.load``): the first frame is small and sits in the window the reader peeked, so it
    is read in order; the second is 8 KiB or more, which the C unpickler ``read()``s exactly, so
    its rest is dropped. Neither ``pickle.loads`` (in order at both) nor a reader without peek
    (drops at both, and stops at the first) runs the payload, which has no newline: in order, it
    is the text of one UNICODE line."""
    cmd = f"touch {marker}".encode()
    payload = b"\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(cmd)]) + cmd + b"\x85R."
    assert b"\n" not in payload
    first = _frame(b"\x8c\x0512") + b"345" + b"0K."  # dropped: "345" + "0K" and STOP
    filler = b"B" + struct.pack("<I", 9000) + b"z" * 9000 + b"0"
    second = b"0" + _frame(filler + b"\x8c\x0512") + b"345" + b"Vx" + payload + b"\n0."
    return b"\x80\x04" + first + second


_PEEK = (
    "as a buffered file reader may read it (pickle.load(open(path)), numpy.load): each FRAME crossing "
    "read in order or dropped"
)


def _npy(data: bytes) -> bytes:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


@pytest.mark.parametrize("form", ["pickle", "npy"])
def test_a_buffered_file_reads_each_crossing_its_own_way(form: str, tmp_path: Path) -> None:
    """A reading that mixes the two (in order at one crossing, dropped at another) is analysed: the
    two pure readings were, and pickle.load(open(path)) ran what neither had (outside review 21)."""
    marker = tmp_path / "pwned"
    data = mixed_crossing(marker)
    offset = data.index(b"\x93")  # the STACK_GLOBAL, in the file
    if form == "npy":
        path = tmp_path / "array.npy"
        path.write_bytes(_npy(data))
        offset += len(_npy(b""))
        assert runs_payload("numpy.load", path, marker)
    else:
        path = tmp_path / "model.pkl"
        path.write_bytes(data)
        assert runs_payload("pickle.load(open)", path, marker)
    assert not runs_payload("pickle.loads", path, marker)
    assert not runs_payload("pickle.load(BytesIO)", path, marker)

    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    finding = _dangerous(report)
    assert (finding.location.members, finding.location.offset) == ((_PEEK,), offset)
    assert not marker.exists()


@pytest.mark.parametrize("limit", [7, 8, 9])
def test_the_mixed_readings_are_bounded_by_max_pickles_per_stream(limit: int) -> None:
    """Three crossings, 2**3 ways to read them: all eight are read within the limit, and an error
    says the rest are not analysed when it is smaller."""
    from airlock._analysis.pickle_findings import analyse_pickle_stream
    from airlock._formats.base import PickleStream, ReadContext
    from airlock.limits import DEFAULT_LIMITS
    from airlock.policy import Policy

    data = b"\x80\x04" + (_frame(b"Vab") + b"c\n0") * 3 + b"N."
    assert pickle.loads(data) is None
    ctx = ReadContext(DEFAULT_LIMITS.replace(max_pickles_per_stream=limit), Path("m.pkl"), Path("."))
    stream = PickleStream(memoryview(data), 0, "pickle", None)
    found = [
        (members, issue.rule, issue.severity)
        for members, issue in analyse_pickle_stream(stream, ctx, Policy())
    ]
    cut = [((_PEEK,), "limit.exceeded", Severity.ERROR)] if limit < 8 else []
    assert found == [((), "pickle.frame-differential", Severity.SUSPICIOUS), *cut]


_RESUME = (
    "as the next load of the same file reads it (a file reader stands at the end of a FRAME it read whole)"
)


def resumed_load(marker: Path, frame_size: int) -> tuple[bytes, bytes, int]:
    """A pickle that STOPs early inside a FRAME: a file reader that read the frame whole stands at
    its end, and the next load of the same file starts there, with the payload. Read after STOP
    instead, the rest of the frame is a BINBYTES whose body runs over the payload (harmless).
    Returns the framed pickle, what follows it, and the payload's offset in the latter."""
    payload = b"cos\nmkdir\n(S'" + str(marker).encode() + b"'\ntR."
    first = b"}."
    rest = frame_size - len(first) - 5  # the BINBYTES opcode and its length end the frame
    body = b"B" + struct.pack("<I", rest + len(payload)) + b"z" * rest
    return b"\x80\x04" + _frame(first + body), payload + b".", 0


def test_torch_legacy_reads_the_next_pickle_where_the_file_stands(tmp_path: Path) -> None:
    """torch.load of the legacy format loads five pickles from one open file. A sys-info pickle
    that STOPs inside a FRAME of 8 KiB (read whole) hid the main pickle: the scan was CLEAN and
    torch.load ran os.mkdir (outside review 21)."""
    pytest.importorskip("torch")
    from tests._proof import TORCH_LOAD, loader_runs_payload

    marker = tmp_path / "pwned"
    framed, after, at = resumed_load(marker, 9000)
    magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
    head = magic + pickle.dumps(1001, protocol=2) + framed
    path = tmp_path / "model.pt"
    path.write_bytes(head + after + b"].")
    loader_runs_payload(TORCH_LOAD, path, marker)

    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    (finding,) = [f for f in report.findings() if f.rule == "pickle.dangerous-global"]
    assert (finding.callable, finding.location.members) == ("os.mkdir", (_RESUME,))
    assert finding.location.offset == len(head) + at
    assert not marker.exists()


@pytest.mark.parametrize(
    ("frame_size", "reader"), [(9000, "open(sys.argv[1], 'rb')"), (40, "io.BytesIO(data)")]
)
def test_pickle_load_twice_reads_on_where_the_file_stands(
    frame_size: int, reader: str, tmp_path: Path
) -> None:
    """The same with two pickle.load calls on one file: a buffered file reads a frame of 8 KiB or
    more whole, a file without peek reads every frame whole."""
    from tests._proof import loader_runs_payload

    marker = tmp_path / "pwned"
    framed, after, at = resumed_load(marker, frame_size)
    path = tmp_path / "two.pkl"
    path.write_bytes(framed + after)
    code = f"import io, pickle, sys\ndata = open(sys.argv[1], 'rb').read()\nf = {reader}\npickle.load(f)\npickle.load(f)"
    loader_runs_payload(code, path, marker)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    (finding,) = [f for f in report.findings() if f.rule == "pickle.dangerous-global"]
    assert (finding.callable, finding.location.members) == ("os.mkdir", (_RESUME,))
    assert finding.location.offset == len(framed) + at


def test_ordinary_framed_pickles_have_one_reading() -> None:
    """The pickler ends frames between opcodes: big protocol 4/5 pickles never cross a frame end."""
    value = {"rows": [{"id": i, "name": f"n{i}", "blob": b"x" * (i % 300)} for i in range(20_000)]}
    for protocol in (4, 5):
        data = pickle.dumps(value, protocol=protocol)
        assert data.count(b"\x95") >= 1
        assert file_reading(memoryview(data), 0, len(data)) is None
        # the pickler ends the last frame with STOP: the next load starts right after it
        assert Machine(memoryview(data), DEFAULT_LIMITS).run(0).resume is None


def test_frame_inside_a_frame_that_overruns_it(tmp_path: Path) -> None:
    """A FRAME inside a frame that claims more than the outer frame holds: a peek-less reader
    drops the rest of the outer frame and reads the inner one from after it."""
    marker = tmp_path / "pwned"
    payload = _payload(marker)
    # pickle.loads: the inner FRAME is a no-op and SHORT_BINBYTES reads the payload as data.
    outer = b"\x95" + struct.pack("<Q", len(payload)) + b"C" + bytes([len(payload)])
    data = b"\x80\x04" + _frame(outer) + payload + b"0N."
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    assert not runs_payload("pickle.loads", path, marker)
    assert runs_payload("pickle.load(BytesIO)", path, marker)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    finding = _dangerous(report)
    assert (finding.location.members, finding.location.offset) == ((_STEP,), len(data) - len(payload) - 3)
    assert any(f.rule == "pickle.frame-differential" for f in report.findings()), render_text(report)


def test_an_opcode_that_fails_inside_a_frame_is_read_again_from_the_file(tmp_path: Path) -> None:
    """Found by the differential fuzzer: ``pickle.loads`` fails on a STRING whose line starts in
    the frame (``S0'touch ...'``), so the crossing was never seen; a peek-less reader drops the
    ``0`` at the frame's end, reads a valid string and runs INST os.system."""
    marker = tmp_path / "pwned"
    data = b"\x8c\x01x0(" + _frame(b"S0") + b"'touch " + str(marker).encode() + b"'\nios\nsystem\n."
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    assert not runs_payload("pickle.loads", path, marker)
    assert runs_payload("pickle.load(BytesIO)", path, marker)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    finding = _dangerous(report)
    assert (finding.location.members, finding.location.offset) == ((_STEP,), data.index(b"ios\n"))


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_the_second_reading_is_bounded_by_max_decompressed_bytes(extra: int, tmp_path: Path) -> None:
    """The peek-less reading is a copy of the bytes it consumes: it stops at the limit and says so."""
    marker = tmp_path / "pwned"
    data, _offset = line_crossing(marker)
    reading = file_reading(memoryview(data), 0, len(data))
    assert reading is not None
    consumed = len(reading.data)
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    limit = consumed + extra
    report = airlock.scan(path, limits=airlock.Limits(max_decompressed_bytes=limit))
    limited = [f for f in report.findings() if f.rule == "limit.exceeded"]
    cut = file_reading(memoryview(data), 0, limit)
    assert cut is not None and cut.cut == (extra < 0)
    assert bool(limited) == (extra < 0), render_text(report)
    # the payload comes before the cut: named either way (MALICIOUS outranks the limit's ERROR)
    assert report.verdict is Verdict.MALICIOUS


def joblib_array_in_a_frame(marker: Path) -> tuple[bytes, int]:
    """joblib.dump of a 4-byte array, with the wrapper's BUILD moved inside a FRAME that goes on.
    joblib's pure-Python unpickler has read the whole frame: it reads the array (a pad length, the
    pad, the bytes) where the file stands, after the frame, then runs the frame's rest, then what
    follows the array: the payload. Read after BUILD instead (what airlock did), the pad length is
    the frame's next byte, the array ends inside the frame before a STOP, and what follows is a
    pickle whose BINBYTES runs over the payload. Returns the file and the BUILD's offset."""
    import io

    import joblib
    import numpy as np

    buf = io.BytesIO()
    joblib.dump(np.arange(4, dtype=np.uint8), buf)
    dumped = buf.getvalue()
    content = dumped[11 : 11 + struct.unpack_from("<Q", dumped, 3)[0]]
    assert content.endswith(b"ub")  # joblib ends the frame with the wrapper's BUILD
    payload = b"cos\nmkdir\n(S'" + str(marker).encode() + b"'\ntR."
    rest = b"0" + b"B" + struct.pack("<I", 48) + b"z" * 47 + b"."  # "0" = 48: airlock's pad length
    after_array = b"\x00\x01\x02\x03" + payload
    pad = b"0B" + struct.pack("<I", 72 + len(after_array)) + b"p" * 72  # "N" = 78 bytes of pad
    data = b"\x80\x04" + _frame(content + rest) + b"N" + pad + after_array + b"."
    return data, 11 + len(content) - 1


def test_a_joblib_array_inside_a_frame_that_goes_on_is_an_error(tmp_path: Path) -> None:
    """joblib commits the frame before each array; a BUILD inside a frame that goes on is read by
    joblib.load in an order airlock does not follow: a format error, never clean (the scan was
    CLEAN and joblib.load ran os.mkdir: outside review 21)."""
    pytest.importorskip("joblib")
    from tests._proof import loader_runs_payload

    marker = tmp_path / "pwned"
    data, build = joblib_array_in_a_frame(marker)
    path = tmp_path / "model.joblib"
    path.write_bytes(data)
    loader_runs_payload("import joblib, sys\njoblib.load(sys.argv[1])", path, marker)
    report = airlock.scan(path)
    assert report.verdict is Verdict.ERROR, render_text(report)
    errors = [f for f in report.findings() if f.severity is Severity.ERROR]
    assert [(f.rule, f.location.offset) for f in errors] == [("format.error", build)]
    assert data[build : build + 1] == b"b"
    assert "joblib reads the array from the frame's end" in errors[0].message
