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
