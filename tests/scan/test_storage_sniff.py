"""Raw tensor storages are not pickles: bytes that merely start like one must not turn weights SUSPICIOUS.

torch never unpickles ``data/N``; the scanner still sniffs storages (a renamed member might be
loaded by something else) but an extension opcode alone (0x82-0x84, one random byte in 256) fails
in any fresh interpreter, so it must not make an ordinary checkpoint SUSPICIOUS.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import airlock
from airlock.results import Verdict

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("first", [0x82, 0x83, 0x84])
def test_storage_starting_with_an_extension_opcode_is_clean(tmp_path: Path, first: int) -> None:
    path = tmp_path / "weights.pt"
    data = torch.tensor([first, 5, 0, 0, 0, 7, 9, 11], dtype=torch.uint8)
    torch.save({"w": data}, path)
    report = airlock.scan(path)
    assert report.verdict is Verdict.CLEAN, [f.rule for f in report.findings()]


def test_storage_that_is_a_real_pickle_is_still_analysed(tmp_path: Path) -> None:
    # A storage whose bytes are a pickle calling os.system: torch ignores it, a renamed member
    # loaded with pickle.load would run it; the scan names it.
    payload = b"cos\nsystem\n(S'true'\ntR."
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, path)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS
    assert any(f.callable == "os.system" for f in report.findings())


# Raw storages whose first bytes spell a whole pickle (NEWFALSE STOP, NONE STOP, BININT1 5 STOP,
# EMPTY_DICT STOP, a protocol-2 EMPTY_LIST STOP): torch.load never unpickles them, pickle.loads would
# return a harmless value and ignore the rest. One float32 tensor in ~1,000 random ones starts so.
@pytest.mark.parametrize("head", [b"\x89.", b"N.", b"K\x05.", b"}.", b"\x80\x02]."])
def test_storage_starting_with_a_whole_harmless_pickle_is_clean(tmp_path: Path, head: bytes) -> None:
    import subprocess
    import sys

    raw = bytearray(head + bytes(range(60)))
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.frombuffer(raw, dtype=torch.uint8).clone()}, path)
    # the real loader reads it back as tensor bytes; the head alone is a pickle of a plain value
    check = (
        "import pickle, sys, torch; t = torch.load(sys.argv[1], weights_only=True)['w']; "
        "assert pickle.loads(bytes.fromhex(sys.argv[2])) in (False, None, 5, {}, []); "
        "print(bytes(t.numpy()[:2]).hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", check, str(path), head.hex()],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == head[:2].hex()
    report = airlock.scan(path)
    assert report.verdict is Verdict.CLEAN, [(f.rule, f.message) for f in report.findings()]


def test_storage_with_a_harmless_pickle_then_a_dangerous_one_is_still_named(tmp_path: Path) -> None:
    # the lenient reading goes past the first pickle: a second one that imports os.system is named
    payload = b"N." + b"cos\nsystem\n(S'true'\ntR."
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, path)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS
    assert any(f.callable == "os.system" for f in report.findings())


def test_random_storages_are_never_findings() -> None:
    """Seeded random tensor bytes of the usual dtypes, read as leniently as a storage member: at
    the rate measured before the fix (one storage in ~30,000 gave an extension code, a call of it
    or a STACK_GLOBAL of non-strings) a 300-tensor checkpoint was flagged ~1% of the time."""
    import numpy as np

    from airlock._analysis.pickle_findings import analyse_pickle_stream
    from airlock._formats.base import PickleStream, ReadContext
    from airlock.limits import DEFAULT_LIMITS
    from airlock.policy import Policy

    rng = np.random.default_rng(20261130)
    policy, ctx = Policy(), ReadContext(DEFAULT_LIMITS, Path("m.pt"), Path("."))
    makers = (
        lambda: rng.standard_normal(16).astype(np.float32).tobytes(),
        lambda: rng.integers(0, 256, 64, dtype=np.uint8).tobytes(),
        lambda: rng.integers(-1000, 1000, 8).astype(np.int64).tobytes(),
        lambda: (rng.standard_normal(32) * 0.02).astype(np.float16).tobytes(),
    )
    found = []
    for i in range(120_000):
        raw = makers[i % 4]()
        stream = PickleStream(memoryview(raw), 0, "storage", None, lenient=True)
        found += [(raw.hex(), issue.rule) for _, issue in analyse_pickle_stream(stream, ctx, policy)]
    assert found == []
