"""Python 2 strings are strings to every default unpickler: STACK_GLOBAL imports by them.

STRING / BINSTRING / SHORT_BINSTRING load as ``str`` (``pickle.load``'s ``encoding="ASCII"``,
torch's ``"utf-8"``, numpy's ``"latin1"``). The lenient reading of torch storages stayed quiet for
STACK_GLOBALs whose operands were not unicode constants, so a storage member holding
``U os U mkdir STACK_GLOBAL ... REDUCE`` scanned CLEAN while ``pickle.loads`` of the extracted
member ran ``os.mkdir``. These fixtures are proven with the real loader in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import airlock
from airlock.results import Verdict

torch = pytest.importorskip("torch")


def _py2_str(op: bytes, text: bytes) -> bytes:
    if op == b"U":  # SHORT_BINSTRING
        return b"U" + bytes([len(text)]) + text
    if op == b"T":  # BINSTRING
        return b"T" + len(text).to_bytes(4, "little") + text
    return b"S'" + text + b"'\n"  # STRING, protocol 0


def _payload(marker: Path, op: bytes) -> bytes:
    arg = str(marker).encode()
    assert len(arg) < 256
    return (
        b"\x80\x04" + _py2_str(op, b"os") + _py2_str(op, b"mkdir") + b"\x93" + _py2_str(op, arg) + b"\x85R."
    )


def _proven(raw: bytes, marker: Path) -> None:
    """The real unpickler runs the payload (a harmless mkdir) in a throwaway subprocess."""
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=raw, check=True, timeout=60, capture_output=True)
    assert marker.is_dir()
    marker.rmdir()


@pytest.mark.parametrize("op", [b"U", b"T", b"S"])
def test_storage_importing_by_python2_strings_is_named(tmp_path: Path, op: bytes) -> None:
    marker = tmp_path / "ran"
    raw = _payload(marker, op)
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()}, path)
    with zipfile.ZipFile(path) as z:  # the fixture, read in the test process: no airlock input
        member = next(n for n in z.namelist() if n.endswith("/data/0"))
        assert z.read(member) == raw
    _proven(raw, marker)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    hits = [f for f in report.findings() if f.rule == "pickle.dangerous-global"]
    assert [f.callable for f in hits] == ["os.mkdir"]


def test_plain_pickle_importing_by_python2_strings_names_the_callable(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    raw = _payload(marker, b"U")
    _proven(raw, marker)
    path = tmp_path / "model.pkl"
    path.write_bytes(raw)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS
    assert [f.callable for f in report.findings() if f.rule == "pickle.dangerous-global"] == ["os.mkdir"]


def test_near_miss_bytes_operands_stay_quiet_in_a_storage(tmp_path: Path) -> None:
    # SHORT_BINBYTES operands: bytes to every unpickler, STACK_GLOBAL refuses them ("requires str")
    raw = b"\x80\x04C\x02osC\x05mkdir\x93."
    out = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(bytes.fromhex(sys.argv[1]))", raw.hex()],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "STACK_GLOBAL requires str" in out.stderr
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()}, path)
    report = airlock.scan(path)
    assert report.verdict is Verdict.CLEAN, [(f.rule, f.message) for f in report.findings()]


def test_opaque_operands_are_not_quiet() -> None:
    """STACK_GLOBAL on an extension code (a process that registered one resolves it to any object,
    a string included) is an import that may succeed: the storage is not quiet."""
    from airlock._analysis.pickle_findings import analyse_pickle_stream
    from airlock._formats.base import PickleStream, ReadContext
    from airlock.limits import DEFAULT_LIMITS
    from airlock.policy import Policy

    # EXT1 7 -> os.name ("posix" once registered), "system": posix.system
    raw = b"\x80\x04\x82\x07\x8c\x06system\x93\x8c\x04true\x85R."
    code = (
        "import copyreg, pickle, sys; copyreg.add_extension('os', 'name', 7); "
        "print(pickle.loads(bytes.fromhex(sys.argv[1])).__name__)"
    )
    head = raw[: raw.index(b"\x93") + 1] + b"."  # the global alone, not called
    out = subprocess.run(
        [sys.executable, "-c", code, head.hex()], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "system", out.stderr
    ctx = ReadContext(DEFAULT_LIMITS, Path("m.pt"), Path("."))
    stream = PickleStream(memoryview(raw), 0, "storage", None, lenient=True)
    rules = [issue.rule for _, issue in analyse_pickle_stream(stream, ctx, Policy())]
    assert "pickle.dynamic-global" in rules


def test_storage_with_a_huge_long4_before_the_payload_is_named(tmp_path: Path) -> None:
    """A LONG4 longer than the reader decodes is valid to every unpickler: the reading used to stop
    there ("larger than any model file needs"), and a lenient storage reading took the stop for
    the end of raw bytes, so the import after it went unreported."""
    marker = tmp_path / "ran"
    n = 100_001
    raw = (
        b"\x80\x02\x8b" + n.to_bytes(4, "little") + b"\x01" * n + b"0"  # LONG4, POP
        b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."
    )
    _proven(raw, marker)
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()}, path)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS
    assert [f.callable for f in report.findings() if f.rule == "pickle.dangerous-global"] == ["os.mkdir"]


def test_a_limit_that_stops_a_storage_reading_is_an_error() -> None:
    """A storage reading stopped by the reader's own limit (here max_pickle_opcodes) has not been
    read to its end: an error, never the silence of raw bytes."""
    from airlock._analysis.pickle_findings import analyse_pickle_stream
    from airlock._formats.base import PickleStream, ReadContext
    from airlock.limits import DEFAULT_LIMITS
    from airlock.policy import Policy

    limits = DEFAULT_LIMITS.replace(max_pickle_opcodes=100_000)
    # EXT codes keep the full machine (not the plain-data pass); then the payload past the limit
    raw = b"\x80\x02" + b"\x82\x01" * 200_000 + b"cos\nsystem\n(Vtrue\ntR."
    ctx = ReadContext(limits, Path("m.pt"), Path("."))
    stream = PickleStream(memoryview(raw), 0, "storage", None, lenient=True)
    rules = [issue.rule for _, issue in analyse_pickle_stream(stream, ctx, Policy())]
    assert rules == ["limit.exceeded"]


@pytest.mark.parametrize(
    "spelling", [b"I0x10\n", b"I010\n", b"I1_0\n", b"I 5\n", b"L0x10L\n", b"(I1\np1_0\n0g10\n0"]
)
def test_storage_with_protocol0_integers_as_cpython_reads_them_is_named(
    tmp_path: Path, spelling: bytes
) -> None:
    """Protocol-0 integers the reader refused (hex, strtol octal, underscores, whitespace) are read
    on by CPython's _pickle: a stop there hid the import after them in a storage member."""
    marker = tmp_path / "ran"
    if spelling.startswith(b"("):  # its own MARK and POP: then the leftover MARK is popped
        raw = spelling + b"1" + b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."
    else:
        raw = spelling + b"0" + b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."
    _proven(raw, marker)
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()}, path)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.message) for f in report.findings()]
    assert [f.callable for f in report.findings() if f.rule == "pickle.dangerous-global"] == ["os.mkdir"]


def test_protocol0_integer_values_match_cpython() -> None:
    from airlock._formats.pickle_ops import decode_op

    spellings = [b"0x10", b"010", b"1_0", b" 5", b"5 ", b"00", b"01", b"+0", b"+1", b" 1", b"-00", b"08",
                 b"12L", b"0b11", b"\t7", b"-010", b"0o17", b"1__0", b"", b"x"]  # fmt: skip
    ops = [b"I" + s + b"\n." for s in spellings] + [b"L" + s + b"L\n." for s in spellings]
    code = (
        "import pickle, sys\n"
        "for line in sys.stdin.buffer.read().split(b'\\0'):\n"
        "    try: print(repr(pickle.loads(line)))\n"
        "    except Exception: print('ERR')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=b"\0".join(ops), capture_output=True, check=True, timeout=60
    )
    real = out.stdout.decode().split()

    def ours(op: bytes) -> str:
        try:
            return repr(decode_op(memoryview(op), 0)[1])
        except Exception:
            return "ERR"

    assert [ours(op) for op in ops] == real


def test_storage_with_a_text_line_longer_than_the_reader_reads_is_an_error(tmp_path: Path) -> None:
    """A protocol-0 STRING longer than MAX_TEXT_LINE is valid to CPython; the reader's stop there
    is its own limit, reported, never the quiet end of raw storage bytes."""
    from airlock._analysis.pickle_findings import analyse_pickle_stream
    from airlock._formats.base import PickleStream, ReadContext
    from airlock._formats.pickle_ops import MAX_TEXT_LINE
    from airlock.limits import DEFAULT_LIMITS
    from airlock.policy import Policy

    marker = tmp_path / "ran"
    raw = b"S'" + b"a" * MAX_TEXT_LINE + b"'\n0" + b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."
    _proven(raw, marker)
    ctx = ReadContext(DEFAULT_LIMITS, Path("m.pt"), Path("."))
    stream = PickleStream(memoryview(raw), 0, "storage", None, lenient=True)
    rules = [issue.rule for _, issue in analyse_pickle_stream(stream, ctx, Policy())]
    assert rules == ["limit.exceeded"]
