"""The text runtime on a GPU lane, tested on CPU: a worker given a GPU that CUDA cannot use (here:
the fake device tree of tests/sandbox/test_gpu.py, or a torch built without CUDA) fails its load
with a clear error at once; it never falls back to the CPU silently. On a GPU host,
``bench/gpu_check.py`` loads the same model on the GPU and generates."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.errors import SandboxError
from airlock.sandbox import SandboxPolicy, Worker, _launcher
from airlock.sandbox._gpu import gpu_binding
from tests.sandbox.test_gpu import _fake_host
from tests.text.conftest import TEXT_LIMITS


@pytest.fixture
def fake_gpu_host() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="airlock-text-gpu-"))
    try:
        base.chmod(0o755)
        root = _fake_host(base / "host")
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(base)


def test_a_gpu_that_cuda_cannot_use_is_a_load_error_not_a_cpu_fallback(
    smollm2: Path, fake_gpu_host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_launcher, "gpu_binding", functools.partial(gpu_binding, root=str(fake_gpu_host)))
    policy = SandboxPolicy(limits=TEXT_LIMITS, gpu=0, unsafe_weaker_sandbox=True)  # no cgroup needed here
    with pytest.raises(
        SandboxError,
        match=r"sandboxed load failed: RuntimeError: this worker was given a GPU but CUDA cannot use it "
        r"inside the sandbox .*not falling back to the CPU",
    ):
        Worker(smollm2, policy=policy)
