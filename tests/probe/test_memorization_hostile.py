"""The audit's host side against a job that is really taken over (a real ``torch.load`` payload,
harmless): the job answers the lm-score requests with lies, and each lie ends in ``SandboxError``
(never a wrong report, an exception of another kind or a hang). The honest answer over the same
channel is accepted, so the test is not vacuous."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.errors import SandboxError
from airlock.probe.memorization import Settings, measure, parse_records
from airlock.probe.memorization._model import Scorer
from airlock.sandbox import Sandbox, SandboxPolicy
from airlock.sandbox._policy import SandboxLimits
from tests.sandbox._payloads import exec_checkpoint

pytestmark = pytest.mark.xdist_group("memorization-hostile")

LIMITS = SandboxLimits(memory_bytes=4 << 30, cpu_seconds=20, wall_seconds=20, tasks=64)

#: Run inside the job by torch.load: every infer answers with ``REPLY`` (an expression over np).
_TAKEOVER = """
import airlock.sandbox._runtimes.torch_pickle as tp
def lie(self, inputs):
    import numpy as np
    if int(inputs["op"][0]) == 0:
        n = int(inputs["lengths"].shape[0])
        return {score}
    return {complete}
tp._Pickled.infer = lie
"""
_HONEST_SCORE = '[("nll", np.arange(n, dtype=np.float64) + 1.0), ("tokens", np.ones(n, dtype=np.int64))]'
_HONEST_COMPLETE = (
    '[("text", np.frombuffer(b" 12", dtype=np.uint8)), ("lengths", np.array([3], dtype=np.int64)), '
    '("tokens", np.array([2], dtype=np.int64))]'
)
_RECORDS = parse_records(b'{"records": [{"id": "a", "template": "PIN {digits:2}", "text": "PIN 12"}]}')


@pytest.fixture(scope="module")
def warm() -> Iterator[Sandbox]:
    with Sandbox(SandboxPolicy(limits=LIMITS), runtimes=("torch",)) as sandbox:
        yield sandbox


def _audit(warm: Sandbox, tmp_path: Path, score: str, complete: str = _HONEST_COMPLETE) -> object:
    model = exec_checkpoint(tmp_path / "liar.pt", _TAKEOVER.format(score=score, complete=complete))
    with warm.open(model) as worker:
        return measure(Scorer(worker), _RECORDS, Settings(candidates=99), {"source": "liar"})


def test_an_honest_answer_over_the_same_channel_is_accepted(warm: Sandbox, tmp_path: Path) -> None:
    report = _audit(warm, tmp_path, _HONEST_SCORE)
    (record,) = report.records  # type: ignore[attr-defined]
    # the record scored lowest (1.0): first of the 100 texts of its format, exactly
    assert record.enumerated and record.rank == 1 and record.exposure == pytest.approx(6.6438561)
    assert record.extraction.exact and record.at_risk


@pytest.mark.parametrize(
    ("score", "complete", "error"),
    [
        ('[("nll", np.full(n, np.nan)), ("tokens", np.ones(n, dtype=np.int64))]', _HONEST_COMPLETE, "out of range"),
        ('[("nll", -np.ones(n)), ("tokens", np.ones(n, dtype=np.int64))]', _HONEST_COMPLETE, "out of range"),
        ('[("nll", np.ones(n + 1)), ("tokens", np.ones(n + 1, dtype=np.int64))]', _HONEST_COMPLETE, "expected <f8"),
        ('[("nll", np.ones(n, dtype=np.float32)), ("tokens", np.ones(n, dtype=np.int64))]', _HONEST_COMPLETE,
         "expected <f8"),
        ('[("nll", np.ones(n)), ("tokens", np.full(n, 10**6, dtype=np.int64))]', _HONEST_COMPLETE, "claims 1000000"),
        ('[("nll", np.ones(n))]', _HONEST_COMPLETE, "expected \\['nll', 'tokens'\\]"),
        (_HONEST_SCORE, '[("text", np.zeros(5000, dtype=np.uint8)), ("lengths", np.array([5000], dtype=np.int64)), '
         '("tokens", np.array([4], dtype=np.int64))]', "claims 4 tokens in 5000 bytes"),
        (_HONEST_SCORE, '[("text", np.zeros(3, dtype=np.uint8)), ("lengths", np.array([2], dtype=np.int64)), '
         '("tokens", np.array([2], dtype=np.int64))]', "cover 2 bytes, the text has 3"),
        (_HONEST_SCORE, '{"text": object()}', "sandboxed infer failed"),
    ],
)  # fmt: skip
def test_each_lie_is_a_sandbox_error(
    warm: Sandbox, tmp_path: Path, score: str, complete: str, error: str
) -> None:
    with pytest.raises(SandboxError, match=error):
        _audit(warm, tmp_path, score, complete)
