"""Sniffing by what the unpickler accepts: any content ``pickle.load`` would start to run is a pickle.

Each fixture is a valid pickle whose first opcode is not the PROTO 2-5 header writers usually put
first; a real ``pickle.load`` (in a subprocess) runs its harmless payload, and airlock must report
it MALICIOUS with the payload named, alone and inside a folder under a name that is not a model
file name (where unrecognised content is skipped). Near misses (content the unpickler rejects
before importing anything) stay skipped.
"""

from __future__ import annotations

import pickletools
import struct
from pathlib import Path

import pytest

import airlock
from airlock import Severity, Verdict
from airlock._formats.pickle import looks_like_pickle
from airlock._formats.pickle_ops import OPCODE_TABLE
from airlock._render.text import render as render_text
from airlock.results import Finding
from tests.fixtures.loaders import runs_payload


def _global_body(marker: Path) -> bytes:
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def _stack_global_body(marker: Path) -> bytes:
    cmd = f"touch {marker}".encode()
    return b"\x8c\x02os\x8c\x06system\x93(\x8c" + bytes([len(cmd)]) + cmd + b"tR."


def _inst_body(marker: Path) -> bytes:
    return b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n."


#: (id, bytes before the payload, payload kind). Every opcode the unpickler accepts first and
#: that leaves the stack as it found it once followed by POP (or pairs with its own MARK).
_PUSHES: list[tuple[str, bytes]] = [
    ("NONE", b"N"),
    ("NEWTRUE", b"\x88"),
    ("NEWFALSE", b"\x89"),
    ("INT", b"I7\n"),
    ("INT-bool", b"I01\n"),
    ("BININT", b"J\x01\x00\x00\x00"),
    ("BININT1", b"K\x01"),
    ("BININT2", b"M\x01\x00"),
    ("LONG", b"L12L\n"),
    ("LONG1", b"\x8a\x01\x05"),
    ("LONG4", b"\x8b\x01\x00\x00\x00\x05"),
    ("FLOAT", b"F1.5\n"),
    ("BINFLOAT", b"G" + struct.pack(">d", 1.5)),
    ("STRING", b"S'x'\n"),
    ("BINSTRING", b"T\x01\x00\x00\x00x"),
    ("SHORT_BINSTRING", b"U\x01x"),
    ("UNICODE", b"Vx\n"),
    ("BINUNICODE", b"X\x01\x00\x00\x00x"),
    ("SHORT_BINUNICODE", b"\x8c\x01x"),
    ("BINUNICODE8", b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00x"),
    ("BINBYTES", b"B\x01\x00\x00\x00x"),
    ("SHORT_BINBYTES", b"C\x01x"),
    ("BINBYTES8", b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00x"),
    ("BYTEARRAY8", b"\x96\x01\x00\x00\x00\x00\x00\x00\x00x"),
    ("EMPTY_LIST", b"]"),
    ("EMPTY_DICT", b"}"),
    ("EMPTY_TUPLE", b")"),
    ("EMPTY_SET", b"\x8f"),
    ("NONE-PUT", b"Np0\n"),
    ("NONE-BINPUT", b"Nq\x00"),
    ("NONE-MEMOIZE", b"N\x94"),
    ("NONE-DUP", b"N20"),
    # CPython reads protocol-0 numbers as C strings: the first NUL ends the number (outside review 21)
    ("INT-NUL", b"I7\x00junk\n"),
    ("INT-only-NUL", b"I\x00junk\n"),  # strtol reads no digit and stops at the NUL: 0
    ("LONG-NUL", b"L12\x00junkL\n"),
    ("FLOAT-NUL", b"F1.5\x00junk\n"),
    ("NONE-PUT-GET-NUL", b"Np0\x00junk\n0g0\x00junk\n"),
    # a number's line longer than the sniffed head (4096 bytes), as CPython reads it
    ("INT-long-whitespace", b"I" + b" " * 5000 + b"7\n"),
    ("INT-long-after-NUL", b"I7\x00" + b"z" * 5000 + b"\n"),
    ("LONG-long-hex", b"L0x" + b"f" * 5000 + b"\n"),
    ("LONG-long-underscores", b"L1" + b"_1" * 3000 + b"L\n"),
    ("FLOAT-long-after-NUL", b"F1.5\x00" + b"z" * 5000 + b"\n"),
    ("NONE-PUT-long-whitespace", b"Np" + b" " * 5000 + b"0\n"),
]
CASES: list[tuple[str, bytes, str]] = (
    [("GLOBAL-first", b"", "global"), ("INST-first", b"", "inst"), ("STACK_GLOBAL-no-PROTO", b"", "stack")]
    + [(f"PROTO-{n}", b"\x80" + bytes([n]), "global") for n in range(6)]
    + [(f"{name}-first", prefix + b"0", "global") for name, prefix in _PUSHES]
    + [
        ("MARK-POP_MARK", b"(N1", "global"),
        ("MARK-POP", b"(0", "global"),  # POP on an empty frame removes the MARK
        ("BINUNICODE-STACK_GLOBAL", b"", "stack-x"),
        ("PROTO-1-STACK_GLOBAL", b"\x80\x01", "stack"),
    ]
)


def _build(prefix: bytes, kind: str, marker: Path) -> tuple[bytes, int]:
    """The fixture and the offset of the opcode that imports os.system."""
    if kind == "global":
        return prefix + _global_body(marker), len(prefix)
    if kind == "inst":
        body = _inst_body(marker)
        return prefix + body, len(prefix) + body.index(b"ios\n")
    body = _stack_global_body(marker)
    if kind == "stack-x":
        body = b"X\x02\x00\x00\x00os" + body[4:]
    return prefix + body, len(prefix) + body.index(b"\x93")


def _finding(report: airlock.Report, path_end: str) -> Finding:
    for finding in report.findings():
        if finding.rule == "pickle.dangerous-global" and finding.location.path.endswith(path_end):
            return finding
    raise AssertionError(render_text(report))


@pytest.mark.parametrize(("case", "prefix", "kind"), CASES, ids=[c[0] for c in CASES])
def test_any_first_opcode_is_sniffed_named_alone_and_in_a_folder(
    case: str, prefix: bytes, kind: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    data, offset = _build(prefix, kind, marker)
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "notes"  # not a model file name: unrecognised content here would be skipped
    path.write_bytes(data)
    (folder / "README.md").write_text("# a model\n")
    assert runs_payload("pickle.load(open)", path, marker), f"{case}: fixture does not run"

    for target in (path, folder):
        report = airlock.scan(target)
        assert report.verdict is Verdict.MALICIOUS, render_text(report)
        finding = _finding(report, "/notes")
        assert finding.severity is Severity.MALICIOUS
        assert finding.callable == "os.system"
        assert finding.location.members == ()
        assert finding.location.offset == offset
        assert [s.path for s in report.skipped] == ([f"{folder}/README.md"] if target == folder else [])
    assert not marker.exists()


#: Content whose first bytes are opcodes but that every unpickler rejects before importing
#: anything: harmless under any loader, so not a pickle (a folder lists it as skipped).
NEAR_MISSES: list[tuple[str, bytes]] = [
    ("module-with-space", b"cos system\nsystem\n(S'x'\ntR."),
    ("yaml-line", b"compute_environment: LOCAL_MACHINE\ndistributed_type: NO\n"),
    ("REDUCE-first", b"R" + b"cos\nsystem\n(S'x'\ntR."),
    ("APPEND-first", b"a" + b"cos\nsystem\n(S'x'\ntR."),
    ("GET-unknown-key", b"h\x00" + b"cos\nsystem\n(S'x'\ntR."),
    ("PROTO-6", b"\x80\x06" + b"cos\nsystem\n(S'x'\ntR."),
    ("STACK_GLOBAL-on-ints", b"K\x01K\x02\x93" + b"cos\nsystem\n(S'x'\ntR."),
    ("INT-not-decimal", b"Ifoo\n" + b"cos\nsystem\n(S'x'\ntR."),
    ("INT-not-decimal-before-NUL", b"I1x\x00\n" + b"cos\nsystem\n(S'x'\ntR."),
    ("LONG-L-before-NUL", b"L5L\x00\n" + b"cos\nsystem\n(S'x'\ntR."),  # the L is not the line's last
    ("LONG-only-NUL", b"L\x00\n" + b"cos\nsystem\n(S'x'\ntR."),  # PyLong_FromString(""): no number
    ("INT-long-letters", b"I12" + b"g" * 5000 + b"\n" + b"cos\nsystem\n(S'x'\ntR."),
    ("licence", b"MIT License\n\nCopyright (c) 2024\n"),
]


@pytest.mark.parametrize(("case", "data"), NEAR_MISSES, ids=[c[0] for c in NEAR_MISSES])
def test_content_the_unpickler_rejects_first_is_not_a_pickle(case: str, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "notes"
    path.write_bytes(data)
    marker = tmp_path / "x"  # the payloads above touch "x" in the loader's working directory
    assert not runs_payload("pickle.load(open)", path, marker)
    assert not looks_like_pickle(data, len(data))
    report = airlock.scan(tmp_path)
    assert [s.path for s in report.skipped] == [f"{tmp_path}/notes"], render_text(report)


def test_a_pickle_longer_than_the_sniffed_head_is_a_pickle(tmp_path: Path) -> None:
    """The head (4096 bytes) ends before STOP or any import: the file goes on, so it is a pickle."""
    marker = tmp_path / "pwned"
    filler = b"(" + b"K\x01" * 3000 + b"l0"
    path = tmp_path / "notes"
    path.write_bytes(filler + _global_body(marker))
    assert runs_payload("pickle.load(open)", path, marker)
    finding = _finding(airlock.scan(tmp_path), "/notes")
    assert (finding.callable, finding.location.offset) == ("os.system", len(filler))
    # the same head alone, with nothing after it, is a truncated stream the unpickler rejects
    head = (filler + _global_body(marker))[:4096]
    assert looks_like_pickle(head, 4097)
    assert not looks_like_pickle(head, 4096)
    # a text argument cut by the head: a pickle only while what came so far can still be valid
    assert looks_like_pickle((b"V" + b"a" * 5000)[:4096], 5003)  # UNICODE takes any bytes
    assert looks_like_pickle((b"cmod" + b"x" * 5000)[:4096], 6000)  # a long module name
    assert not looks_like_pickle((b"PK\x03\x04" + bytes(range(200, 256)) * 80)[:4096], 10**6)  # PERSID: ASCII
    assert not looks_like_pickle((b"I12" + b"a" * 5000)[:4096], 6000)  # INT: digits


def test_protocol0_numbers_end_at_a_nul_as_cpython_reads_them() -> None:
    """INT, LONG, GET, PUT and FLOAT text is read by C functions that stop at the first NUL
    (strtol, PyLong_FromString, PyOS_string_to_double): the values, and the errors, are CPython's.
    A reader that refused "7\\0junk" stopped where pickle.load reads on (outside review 21).
    The pure-Python unpickler (joblib.load's) reads FLOAT with float(): where only it reads on
    (whitespace, underscores), its value."""
    import subprocess
    import sys

    from airlock._formats.pickle_ops import decode_op

    lines = [b" 1.5 ", b"1_0", b"7\x00junk", b"\x00", b"\x0012", b"0\x00", b"1\x00", b"\x00\x00", b" 1 \x00zz", b"010\x00",
             b"0x10\x00z", b"1_0\x00", b"1x\x00", b"-\x00", b"99999999999999999999\x00z", b"5L\x00",
             b"5\x00L", b"\x00L", b"1.5\x00z", b"inf\x00", b"1e3\x00\x00"]  # fmt: skip
    ops = [op + line + b"\n" for op in (b"I", b"L", b"F") for line in lines]
    # (a memo key past ssize_t is an error to CPython; the reader reads on, which hides nothing)
    ops += [b"Np" + line + b"\n0g" + line + b"\n" for line in lines if not line.startswith(b"999")]
    code = (
        "import pickle, sys\n"
        "for line in sys.stdin.read().split():\n"
        "    data = bytes.fromhex(line) + b'.'\n"
        "    try: print(repr(pickle.loads(data)))\n"
        "    except Exception:\n"
        "        try: print(repr(pickle._loads(data)))\n"
        "        except Exception: print('ERR')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=" ".join(op.hex() for op in ops),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    real = out.stdout.split("\n")[:-1]

    def ours(op: bytes) -> str:
        view = memoryview(op)
        try:
            pos, args = 0, []
            while pos < len(op):
                _code, value, pos = decode_op(view, pos)
                args.append(value)
        except Exception:
            return "ERR"
        if op.startswith(b"Np"):  # NONE, PUT k, POP, GET k: None when both keys read as one
            return "None" if args[1] == args[3] else "ERR"
        return repr(args[0])

    assert [ours(op) for op in ops] == real


def test_opcode_table_is_the_unpicklers() -> None:
    """pickle_ops.OPCODE_TABLE is pickletools.opcodes (the running interpreter's) as data."""
    widths = {-2: -11, -3: -14, -4: -14, -5: -18}
    derived = {}
    for op in pickletools.opcodes:
        names = [s.name for s in op.stack_before]
        if op.arg is None:
            arg = 0
        elif op.arg.n > 0:
            arg = op.arg.n
        elif op.arg.n == -1:
            arg = -2 if op.arg.name.endswith("_pair") else -1
        else:
            arg = widths[op.arg.n]
        if "mark" in names:
            at = names.index("mark")
            shape = (at, True, len([n for n in names[at + 1 :] if n != "stackslice"]))
        else:
            shape = (len(names), False, 0)
        derived[ord(op.code)] = (arg, *shape, len(op.stack_after))
    assert derived == OPCODE_TABLE


@pytest.mark.parametrize(
    "raw",
    [
        b"\x95\xff\xff\xff\xff\x00\x00\x00\x00N.",  # a FRAME that overruns, then a data pickle
        b"\x82\x85N.",  # an extension code: the unpickler fails ("unregistered extension code")
        b"N.",  # a complete data pickle
        b"(" + b"K\x01" * 3000,  # decodes past the 4 KiB head
    ],
    ids=["frame-overrun", "ext1", "data-pickle", "long-run"],
)
def test_tensor_bytes_that_decode_as_opcodes_stay_clean(raw: bytes, tmp_path: Path) -> None:
    """torch never unpickles storages: raw tensor bytes that happen to decode (random weights
    do, now and then) are reported only for what they would import, never for their structure."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.frombuffer(bytearray(raw), dtype=torch.uint8)}, path)
    report = airlock.scan(path)
    assert report.verdict is Verdict.CLEAN, render_text(report)


def test_a_tar_that_is_also_a_pickle_is_analysed_both_ways(tmp_path: Path) -> None:
    """A polyglot: the tar reader claims the file (``ustar`` at 257), but its first member's name
    is a pickle that ``pickle.load`` runs. The pickle reading is analysed too."""
    import io
    import tarfile

    marker = tmp_path / "pwned"
    name = "cos\nsystem\n(S'touch pwned'\ntR."  # relative: the loader runs in tmp_path
    path = tmp_path / "model.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    assert runs_payload("pickle.load(open)", path, marker)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    assert report.files[0].format == "tar"
    finding = _finding(report, "/model.tar")
    assert finding.callable == "os.system"
    assert (finding.location.members, finding.location.offset) == (("as pickle.load reads it",), 0)
