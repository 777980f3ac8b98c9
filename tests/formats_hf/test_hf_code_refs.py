"""The modules a Hugging Face config makes diffusers, sentence-transformers and peft import: the
loader's allowlist profile (``_analysis/hf_refs.py``) decides, near misses of an allowed name are
unknown, and ``--allow`` / a policy file extend the profile with exact ``module.Class`` names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import airlock
from airlock import Severity, Verdict
from airlock._cli import main
from airlock._render.text import render as render_text


def _diffusers(folder: Path, library: str, cls: str = "UNet") -> Path:
    folder.mkdir()
    index = {"_class_name": "StableDiffusionPipeline", "unet": [library, cls]}
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_text("{}")
    return folder


def _sentence_transformers(folder: Path, kind: str) -> Path:
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": kind}]))
    return folder


def _peft(folder: Path, library: str, cls: str = "LlamaForCausalLM") -> Path:
    folder.mkdir()
    mapping = {"base_model_class": cls, "parent_library": library}
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "auto_mapping": mapping}))
    return folder


def _dynamic(report: airlock.Report) -> list[tuple[str | None, Severity]]:
    return [(f.callable, f.severity) for f in report.findings() if f.rule == "hf.dynamic-module"]


@pytest.mark.parametrize("library", ["diffusers", "transformers", "stable_diffusion", "onnxruntime"])
def test_diffusers_libraries_on_the_profile_are_clean(tmp_path: Path, library: str) -> None:
    report = airlock.scan(_diffusers(tmp_path / "sd", library))
    assert report.verdict is Verdict.CLEAN, render_text(report)


@pytest.mark.parametrize(
    "library",
    ["Diffusers", "diffusers_", "diffuser", "xdiffusers", "diffusers.models", "transformerz", "onnxruntime2",
     "stable_diffusion_evil", "sentence_transformers", "peft"],
)  # fmt: skip
def test_diffusers_near_misses_are_unknown_modules(tmp_path: Path, library: str) -> None:
    """Exact names only: a submodule, a prefix, a suffix or another loader's library is not allowed."""
    report = airlock.scan(_diffusers(tmp_path / "sd", library))
    assert report.verdict is Verdict.SUSPICIOUS, render_text(report)
    assert _dynamic(report) == [(f"{library}.UNet", Severity.SUSPICIOUS)]


@pytest.mark.parametrize(
    ("kind", "unknown"),
    [
        ("sentence_transformers.models.Pooling", False),
        ("sentence_transformers.models.Transformer", False),
        ("sentence_transformersx.models.Pooling", True),
        ("sentence_transformer.models.Pooling", True),
        ("xsentence_transformers.models.Pooling", True),
        ("Sentence_transformers.models.Pooling", True),
        ("transformers.models.Pooling", True),
        ("sentence-transformers.models.Pooling", True),
    ],
)
def test_sentence_transformers_types_and_near_misses(tmp_path: Path, kind: str, unknown: bool) -> None:
    report = airlock.scan(_sentence_transformers(tmp_path / "st", kind))
    assert report.verdict is (Verdict.SUSPICIOUS if unknown else Verdict.CLEAN), render_text(report)
    assert _dynamic(report) == ([(kind, Severity.SUSPICIOUS)] if unknown else [])


@pytest.mark.parametrize(
    ("library", "unknown"),
    [
        ("transformers", False),
        ("peft", False),
        ("transformers.models.llama.modeling_llama", False),
        ("transformerz", True),
        ("transformers_evil", True),
        ("xpeft", True),
        ("pef", True),
        ("diffusers", True),
    ],
)
def test_peft_parent_libraries_and_near_misses(tmp_path: Path, library: str, unknown: bool) -> None:
    report = airlock.scan(_peft(tmp_path / "p", library))
    assert report.verdict is (Verdict.SUSPICIOUS if unknown else Verdict.CLEAN), render_text(report)
    assert _dynamic(report) == ([(f"{library}.LlamaForCausalLM", Severity.SUSPICIOUS)] if unknown else [])


def test_sentence_transformers_type_with_an_absolute_module_path_is_traversal(tmp_path: Path) -> None:
    """sentence-transformers resolves a type outside its package with transformers'
    ``get_class_from_dynamic_module``, which imports an absolute module path from anywhere on
    the machine (proven here with that function, in a throwaway subprocess)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    marker = tmp_path / "pwned"
    (outside / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Grab:\n    pass\n")
    folder = _sentence_transformers(tmp_path / "st", f"{outside}/evil.Grab")
    code = (
        "import sys\nfrom transformers.dynamic_module_utils import get_class_from_dynamic_module\n"
        "get_class_from_dynamic_module(sys.argv[1], sys.argv[2])\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": os.environ.get("PATH", "/usr/bin")}
    subprocess.run([sys.executable, "-c", code, f"{outside}/evil.Grab", str(folder)],
                   capture_output=True, timeout=180, check=False, env=env)  # fmt: skip
    assert marker.exists(), "the fixture does not import the outside module"
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    assert [f.rule for f in report.findings() if f.severity is Severity.MALICIOUS] == [
        "hf.remote-code-traversal"
    ]


@pytest.mark.parametrize(
    ("build", "allowed"),
    [
        (lambda p: _diffusers(p, "my_lib"), "my_lib.UNet"),
        (lambda p: _sentence_transformers(p, "my_lib.layers.Pool"), "my_lib.layers.Pool"),
        (lambda p: _peft(p, "my_lib.models", "Base"), "my_lib.models.Base"),
    ],
)
def test_allow_extends_the_hf_profile_with_exact_names(
    tmp_path: Path, build: object, allowed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = build(tmp_path / "m")  # type: ignore[operator]
    base = ["scan", str(folder)]
    assert main(base) == 3
    assert main([*base, "--allow", allowed]) == 0
    module, _, cls = allowed.rpartition(".")
    for near in (f"{allowed}x", f"{module}.{cls[:-1]}", f"{module}x.{cls}", f"{allowed}.Inner"):
        assert main([*base, "--allow", near]) == 3, near
    policy = tmp_path / "policy.toml"
    policy.write_text(f"allow = [{allowed!r}]\n".replace("'", '"'))
    assert main([*base, "--policy", str(policy)]) == 0
    capsys.readouterr()


def test_an_allowance_never_clears_a_traversal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _diffusers(tmp_path / "sd", "../../evil", "UNet")
    assert main(["scan", str(folder), "--allow", "evil.UNet"]) == 1
    capsys.readouterr()
