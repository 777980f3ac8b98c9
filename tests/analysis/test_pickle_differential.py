"""Differential fuzzing, bounded for CI: generated pickles are run by the real loaders
(``pickle.loads``, ``pickle.load`` of a ``BytesIO`` and of an opened file, each in a throwaway
subprocess) and scanned by airlock; a file any loader executes is never CLEAN, never skipped in a
folder, and is MALICIOUS with its payload named (tests/fixtures/picklefuzz.py). The long run is
bench/pickle_fuzz_bench.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.picklefuzz import run_campaign


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_what_a_loader_runs_airlock_names(seed: int, tmp_path: Path) -> None:
    executed, disagree, problems = run_campaign(tmp_path, seed, 500)
    # the generator still makes what it is for: payloads that run, and readers that disagree
    assert executed >= 100, executed
    assert disagree >= 1, disagree
    assert not problems, "\n".join(problems[:10])
