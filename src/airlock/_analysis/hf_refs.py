"""Judging the code a Hugging Face config makes a loader import (``CodeReference`` facts,
ecosystem ``hf``, yielded by ``_formats/hf_code_refs.py``).

The allowlist profile :data:`HF_PROFILE` says, per loader, which modules it may import by name
without a policy decision: the libraries that loader ships or its own pipelines use. Then:

* a name that the loader turns into a file path and that leaves the folder (absolute, ``..``,
  a path separator where a module name belongs) is ``hf.remote-code-traversal`` (MALICIOUS);
* remote code (``trust_remote_code``, a file the folder ships for the name, or a module in
  another repository) is ``hf.remote-code`` (SUSPICIOUS: executable code needing a decision);
* a module imported by name that is not on the loader's profile is ``hf.dynamic-module``
  (SUSPICIOUS: its import-time code is outside the scan).

Both SUSPICIOUS rules name the exact ``module.Class`` the loader resolves, which ``--allow`` /
a policy file's ``allow`` turns into INFO (``_scan/engine.py::apply_allowances``), as for
Keras classes and TensorFlow ops. What shipped code does when imported is judged from its
source (``_analysis/python_source.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from airlock._formats.base import CodeReference, Issue
from airlock.results import Severity

__all__ = ["HF_PROFILE", "LoaderProfile", "judge_hf_reference"]


@dataclass(frozen=True)
class LoaderProfile:
    """What one loader may import by name: ``exact`` module names, or any module inside one of
    ``packages`` (the package itself or a submodule). ``paths``: the loader turns the name into
    a file path when the folder has that file (``<component>/<library>.py``)."""

    reason: str
    exact: frozenset[str] = frozenset()
    packages: frozenset[str] = frozenset()
    paths: bool = False

    def allows(self, module: str) -> bool:
        return module in self.exact or module.split(".", 1)[0] in self.packages


#: loader (a ``CodeReference.kind``) -> the modules it may import by name
HF_PROFILE: Final[dict[str, LoaderProfile]] = {
    "diffusers component": LoaderProfile(
        "diffusers itself, transformers, onnxruntime, and the diffusers pipeline module its own "
        "pipelines name (model_index.json [library, class])",
        exact=frozenset({"diffusers", "transformers", "stable_diffusion", "onnxruntime"}),
        paths=True,
    ),
    "diffusers pipeline": LoaderProfile("a custom pipeline file: never allowed by name", paths=True),
    "sentence-transformers module": LoaderProfile(
        "sentence-transformers' own module classes (modules.json type)",
        packages=frozenset({"sentence_transformers"}),
        paths=True,
    ),
    "peft parent library": LoaderProfile(
        "the libraries whose model classes peft's AutoPeftModel wraps (auto_mapping.parent_library)",
        packages=frozenset({"transformers", "peft"}),
    ),
}

_SHOW: Final = 100


def judge_hf_reference(ref: CodeReference) -> Iterator[Issue]:
    """The findings for one name a Hugging Face config makes the loader import."""
    module = ref.module or ""
    dotted = f"{module}.{ref.name}" if ref.name else module
    if ref.kind == "remote code":
        yield from _remote_code(ref, module, dotted)
        return
    profile = HF_PROFILE.get(ref.kind)
    if profile is None:
        raise AssertionError(f"no Hugging Face profile for {ref.kind!r}")
    path = PurePosixPath(module)
    if profile.paths and (path.is_absolute() or ".." in path.parts or "\\" in module or "/" in module):
        yield Issue(
            "hf.remote-code-traversal",
            Severity.MALICIOUS,
            f"{ref.where}: module {module!r:.{_SHOW}} leaves the model folder",
            callable=module[:_SHOW],
            evidence=module[:200],
        )
    elif ref.shipped is not None:
        yield Issue(
            "hf.remote-code",
            Severity.SUSPICIOUS,
            f"{ref.where}: the loader runs {ref.shipped} shipped in the folder (executable code)",
            callable=dotted[:_SHOW],
            evidence=module[:200],
        )
    elif not profile.allows(module):
        yield Issue(
            "hf.dynamic-module",
            Severity.SUSPICIOUS,
            f"{ref.where}: the loader ({ref.kind}) imports module {module!r:.{_SHOW}} by name; not a "
            "library the loader ships, so its import-time code is outside this scan",
            callable=dotted[:_SHOW],
            evidence=module[:200],
        )


def _remote_code(ref: CodeReference, module: str, dotted: str) -> Iterator[Issue]:
    """``get_class_from_dynamic_module``: ``module.py`` from the repository (or ``repo``)."""
    spelled = f"{ref.repo}--{dotted}" if ref.repo else dotted
    where = f"{ref.where} -> {spelled!r:.{_SHOW}}"
    path = PurePosixPath(module)
    if not module or path.is_absolute() or ".." in path.parts or "\\" in module or module.startswith("~"):
        yield Issue(
            "hf.remote-code-traversal",
            Severity.MALICIOUS,
            f"{where}: module path leaves the model folder (expected a module name inside it); "
            "trust_remote_code would import code from elsewhere on the machine",
            callable=spelled,
            evidence=spelled,
        )
    elif ref.repo:
        yield Issue(
            "hf.remote-code",
            Severity.SUSPICIOUS,
            f"{where}: code from another repository {ref.repo!r:.80}, which trust_remote_code downloads and "
            "runs; not part of this scan",
            callable=dotted,
            evidence=spelled,
        )
    else:
        file = f"{module}.py"
        yield Issue(
            "hf.remote-code",
            Severity.SUSPICIOUS,
            f"{where}: trust_remote_code would import {file} "
            + (
                "(shipped in the folder) and run it: executable code"
                if ref.shipped
                else "(not in the folder)"
            ),
            callable=dotted,
            evidence=spelled,
        )
