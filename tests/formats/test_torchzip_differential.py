"""torch zip archives: the bytes torch's reader unpickles are always among those airlock analyses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.formats.torchzip_fuzz import disagreements

pytest.importorskip("torch")


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_archives_torch_reads_only_what_airlock_analysed(tmp_path: Path, seed: int) -> None:
    bad, stats = disagreements(tmp_path, seed, 500)
    assert not bad, "\n".join(bad[:10])
    assert stats["covered"] > 150, stats  # the generator still makes archives torch opens
