from __future__ import annotations

from collections.abc import Iterator

import pytest

from airlock.sandbox import Sandbox, SandboxPolicy
from airlock.sandbox._policy import SandboxLimits

#: small, fast limits so that resource attacks end in seconds
FAST_LIMITS = SandboxLimits(memory_bytes=4 << 30, cpu_seconds=3, wall_seconds=20, tmpfs_bytes=16 << 20,
                            file_size_bytes=8 << 20, tasks=64)  # fmt: skip


@pytest.fixture(scope="module")
def warm() -> Iterator[Sandbox]:
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch",)) as sandbox:
        yield sandbox
