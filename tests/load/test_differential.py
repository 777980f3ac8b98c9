"""airlock.load against torch.load on 2,000 seeded random checkpoints: zero mismatches.

torch runs in a few throwaway subprocesses (500 files each; ``weights_only=True``, or for pickle
protocols 4 and 5, which its weights-only unpickler does not read, the full unpickler on these
generated, harmless files). airlock must give the same tensors (dtype, shape, every byte after
lazy bits) or refuse where torch refuses; the only other refusals allowed are the documented
ones in :data:`tests.load.gen.ALLOWED_REFUSALS`. The long run: ``bench/load_differential.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.load.gen import run

pytest.importorskip("torch")
pytest.importorskip("numpy")

SEED = 20261129
COUNT = 2000


def test_two_thousand_random_checkpoints_match_torch(tmp_path: Path) -> None:
    counts, mismatches = run(SEED, COUNT, tmp_path)
    assert not mismatches, "\n".join(mismatches[:10])
    # the corpus exercises loading, not just refusals
    assert counts["same"] >= COUNT // 2, counts
    assert counts["tensors"] >= COUNT, counts
