"""Hugging Face folders: complete folders clean; remote code, traversal and broken files reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airlock
from airlock import Severity, Verdict
from airlock._render.text import render as render_text
from tests.formats_hf.chat_templates import PUBLIC
from tests.formats_hf.test_hf_template import cve_2024_34359


def _save_pretrained(folder: Path, *, shard: str | None = None) -> Path:
    """A real tiny model folder written by transformers: config, generation config, tokenizer, weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.generation_config.max_new_tokens = 8
    model.save_pretrained(folder, max_shard_size=shard or "5GB")
    vocab = {f"w{i}": i for i in range(29)} | {"<s>": 29, "</s>": 30, "<unk>": 31}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))  # noqa: S106 - a token, not a password
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw, **{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    )
    tok.chat_template = PUBLIC["llama3"]
    tok.save_pretrained(folder)
    (folder / "README.md").write_text("# tiny\n")
    return folder


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_pretrained(tmp_path_factory.mktemp("hf") / "tiny")


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for item in src.iterdir():
        (dst / item.name).write_bytes(item.read_bytes())
    return dst


def test_complete_folder_is_clean(hf_folder: Path) -> None:
    names = {p.name for p in hf_folder.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= names  # fmt: skip
    report = airlock.scan(hf_folder)
    assert report.verdict is Verdict.CLEAN, render_text(report)
    formats = {Path(f.path).name: f.format for f in report.files}
    assert formats["model.safetensors"] == "safetensors"
    assert formats["config.json"] == "hf-folder"
    assert formats["tokenizer_config.json"] == "hf-folder"
    assert [s.path for s in report.skipped] == [f"{hf_folder.as_posix()}/README.md"]


def test_sharded_folder_with_index_is_clean(tmp_path: Path) -> None:
    folder = _save_pretrained(tmp_path / "sharded", shard="20KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    assert (folder / "model.safetensors.index.json").exists()
    report = airlock.scan(folder)
    assert report.verdict is Verdict.CLEAN, render_text(report)


def test_index_naming_a_missing_shard_is_an_error(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    index = {
        "metadata": {},
        "weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    report = airlock.scan(folder)
    assert report.verdict is Verdict.ERROR
    (finding,) = [f for f in report.findings() if f.rule == "hf.index-missing"]
    assert "'model-00002-of-00002.safetensors' is missing" in finding.message


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "a/../../b.safetensors"])
def test_index_pointing_outside_the_folder_is_malicious(hf_folder: Path, tmp_path: Path, shard: str) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS
    (finding,) = [f for f in report.findings() if f.rule == "hf.index-traversal"]
    assert finding.evidence == shard


def _with_remote_code(folder: Path, source: str) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_tiny.TinyConfig",
        "AutoModelForCausalLM": "modeling_tiny.TinyModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_tiny.py").write_text(source)
    (folder / "configuration_tiny.py").write_text("class TinyConfig:\n    pass\n")


def test_auto_map_to_shipped_code_is_reported_as_executable_code(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    _with_remote_code(folder, "import torch\n\nclass TinyModel(torch.nn.Module):\n    pass\n")
    report = airlock.scan(folder)
    assert report.verdict is Verdict.SUSPICIOUS, render_text(report)
    by_file = {Path(f.path).name: f for f in report.files}
    config_findings = [f for f in by_file["config.json"].findings if f.rule == "hf.remote-code"]
    assert {f.callable for f in config_findings} == {
        "modeling_tiny.TinyModel",
        "configuration_tiny.TinyConfig",
    }
    assert any("would import modeling_tiny.py (shipped in the folder)" in f.message for f in config_findings)
    assert by_file["modeling_tiny.py"].verdict is Verdict.SUSPICIOUS


def test_auto_map_to_shipped_code_that_runs_a_command_on_import_is_malicious(
    hf_folder: Path, tmp_path: Path
) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    marker = tmp_path / "pwned"
    _with_remote_code(folder, f"import os\nos.system('touch {marker}')\n\nclass TinyModel:\n    pass\n")
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    (finding,) = [f for f in report.findings() if f.severity is Severity.MALICIOUS]
    assert finding.callable == "os.system"
    assert str(marker) in (finding.evidence or "")
    assert not marker.exists()
    # the fixture is real: transformers with trust_remote_code runs it (in a throwaway process)
    code = (
        "import sys\nfrom transformers.dynamic_module_utils import get_class_from_dynamic_module\n"
        "get_class_from_dynamic_module('modeling_tiny.TinyModel', sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, timeout=120, check=False,
                   env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert marker.exists(), "the fixture does not run its payload under trust_remote_code"


@pytest.mark.parametrize(
    ("ref", "rule", "severity"),
    [
        ("/tmp/evil.Model", "hf.remote-code-traversal", Severity.MALICIOUS),
        ("../../evil.Model", "hf.remote-code-traversal", Severity.MALICIOUS),
        ("other/repo--modeling_x.Model", "hf.remote-code", Severity.SUSPICIOUS),
    ],
)
def test_auto_map_outside_the_folder(
    hf_folder: Path, tmp_path: Path, ref: str, rule: str, severity: Severity
) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [ref, None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    report = airlock.scan(folder)
    assert report.verdict is severity.verdict
    (finding,) = [f for f in report.findings() if f.rule == rule]
    assert finding.severity is severity
    assert finding.evidence == ref


def test_malicious_chat_template_in_tokenizer_config(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    marker = tmp_path / "pwned"
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "default", "template": PUBLIC["qwen3"]},
                               {"name": "tool_use", "template": cve_2024_34359(marker)}]  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS
    ssti = [f for f in report.findings() if f.rule == "template.ssti"]
    assert ssti and all("chat_template['tool_use']" in f.message for f in ssti)
    assert not marker.exists()


def test_chat_template_jinja_file_is_analysed(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    (folder / "chat_template.jinja").write_text(PUBLIC["gemma"])
    assert airlock.scan(folder).verdict is Verdict.CLEAN
    (folder / "chat_template.jinja").write_text("{{ self._TemplateReference__context }}")
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS
    assert {Path(f.location.path).name for f in report.findings() if f.rule == "template.ssti"} == {
        "chat_template.jinja"
    }


@pytest.mark.parametrize("content", [b"{", b'{"a": 1, "a": 2}', b"\xff\xfe", b"[1, 2]"])
def test_broken_config_json_is_an_error(hf_folder: Path, tmp_path: Path, content: bytes) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    (folder / "config.json").write_bytes(content)
    report = airlock.scan(folder)
    assert report.verdict is Verdict.ERROR
    assert any(f.rule == "hf.json" and "config.json" in f.message for f in report.findings())


def test_a_python_file_alone_makes_the_folder_suspicious(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    (folder / "helper.py").write_text(
        "def f():\n    import os\n    os.system('x')\n"
    )  # inside a function: not at import
    report = airlock.scan(folder)
    assert report.verdict is Verdict.SUSPICIOUS
    assert [f.rule for f in report.findings() if f.severity is not Severity.INFO] == ["hf.remote-code"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.binary(max_size=300),
    st.sampled_from(
        [
            "config.json",
            "tokenizer_config.json",
            "model.safetensors.index.json",
            "chat_template.jinja",
            "modeling_x.py",
        ]
    ),
)
def test_fuzz_folder_files_never_crash(tmp_path: Path, blob: bytes, name: str) -> None:
    folder = tmp_path / "fz"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    (folder / "config.json").write_text("{}")
    (folder / name).write_bytes(blob)
    report = airlock.scan(folder)
    assert report.files


def _tokenizer_templates(folder: Path) -> dict[str, str]:
    """The chat templates transformers itself loads from ``folder`` (in a throwaway process)."""
    code = (
        "import sys, json\nfrom transformers import PreTrainedTokenizerFast\n"
        "t = PreTrainedTokenizerFast.from_pretrained(sys.argv[1])\n"
        "c = t.chat_template\nprint(json.dumps(c if isinstance(c, dict) else {'default': c}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True,
                          timeout=120, check=False, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_additional_chat_templates_are_analysed(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    extra = folder / "additional_chat_templates"
    extra.mkdir()
    (extra / "tool_use.jinja").write_text(cve_2024_34359(tmp_path / "pwned"))
    (extra / "rag.jinja").write_text(PUBLIC["qwen3"])
    assert "tool_use" in _tokenizer_templates(folder)  # the loader reads it
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    ssti = {f.location.path for f in report.findings() if f.rule == "template.ssti"}
    assert ssti == {f"{folder.as_posix()}/additional_chat_templates/tool_use.jinja"}
    by_file = {f.path: f for f in report.files}
    assert by_file[f"{folder.as_posix()}/additional_chat_templates/rag.jinja"].verdict is Verdict.CLEAN


@pytest.mark.parametrize("keep", [("tokenizer.json",), ("tokenizer.json", "generation_config.json"), ()])
def test_templates_in_tokenizer_folders_without_config_are_analysed(
    hf_folder: Path, tmp_path: Path, keep: tuple[str, ...]
) -> None:
    folder = tmp_path / "tok"
    folder.mkdir()
    for name in keep:
        (folder / name).write_bytes((hf_folder / name).read_bytes())
    (folder / "chat_template.jinja").write_text(cve_2024_34359(tmp_path / "pwned"))
    if keep:
        assert "default" in _tokenizer_templates(folder)  # no tokenizer_config.json, still loaded
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    assert {Path(f.location.path).name for f in report.findings() if f.rule == "template.ssti"} == {
        "chat_template.jinja"
    }


def test_python_file_in_a_tokenizer_only_folder_is_reported(hf_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((hf_folder / "tokenizer.json").read_bytes())
    (folder / "tokenization_x.py").write_text("import os\nos.system('true')\n")
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS
    assert {f.callable for f in report.findings() if f.severity is Severity.MALICIOUS} == {"os.system"}


# --- keys that make a Hugging Face loader import code by name -----------------------------------


def test_custom_pipelines_impl_runs_shipped_code_and_is_reported(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    marker = tmp_path / "pwned"
    config = json.loads((folder / "config.json").read_text())
    config["custom_pipelines"] = {"tiny-task": {"impl": "pipeline_tiny.TinyPipeline", "pt": []}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "pipeline_tiny.py").write_text(
        f"import os\nos.system('touch {marker}')\n\nclass TinyPipeline:\n    pass\n"
    )
    # transformers.pipeline imports the impl (trust_remote_code) before anything else
    code = (
        "import sys\nfrom transformers import pipeline\npipeline(model=sys.argv[1], trust_remote_code=True)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, timeout=180, check=False,
                   env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert marker.exists(), "the fixture does not run its payload in transformers.pipeline"
    marker.unlink()
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS
    by_file = {Path(f.path).name: f for f in report.files}
    (finding,) = [f for f in by_file["config.json"].findings if f.rule == "hf.remote-code"]
    assert finding.callable == "pipeline_tiny.TinyPipeline"
    assert "custom_pipelines['tiny-task']" in finding.message
    assert not marker.exists()


def test_custom_pipelines_from_another_repository_is_suspicious(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    config = json.loads((folder / "config.json").read_text())
    config["custom_pipelines"] = {"t": {"impl": "other/repo--pipe.Pipe"}}
    (folder / "config.json").write_text(json.dumps(config))
    report = airlock.scan(folder)
    assert report.verdict is Verdict.SUSPICIOUS
    assert [f.evidence for f in report.findings() if f.rule == "hf.remote-code"] == ["other/repo--pipe.Pipe"]


def _diffusers_folder(folder: Path, components: dict[str, object]) -> Path:
    """The layout diffusers' save_pretrained writes: model_index.json naming [library, class] per
    component, one subfolder per component with its config."""
    folder.mkdir()
    index: dict[str, object] = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0"}
    index.update(components)
    (folder / "model_index.json").write_text(json.dumps(index))
    for name in components:
        (folder / name).mkdir()
        (folder / name / "config.json").write_text("{}")
    return folder


def test_diffusers_known_libraries_are_clean(tmp_path: Path) -> None:
    folder = _diffusers_folder(tmp_path / "sd", {
        "unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"], "feature_extractor": [None, None],
    })  # fmt: skip
    report = airlock.scan(folder)
    assert report.verdict is Verdict.CLEAN, render_text(report)


@pytest.mark.parametrize(
    ("components", "rule", "severity", "named"),
    [
        ({"unet": ["antigravity", "UNet"]}, "hf.dynamic-module", Severity.SUSPICIOUS, "antigravity.UNet"),
        ({"unet": ["diffuserz", "UNet"]}, "hf.dynamic-module", Severity.SUSPICIOUS, "diffuserz.UNet"),
        ({"unet": ["../../evil", "UNet"]}, "hf.remote-code-traversal", Severity.MALICIOUS, "../../evil"),
    ],
)
def test_diffusers_components_importing_other_modules(
    tmp_path: Path, components: dict[str, object], rule: str, severity: Severity, named: str
) -> None:
    report = airlock.scan(_diffusers_folder(tmp_path / "sd", components))
    assert report.verdict is severity.verdict, render_text(report)
    (finding,) = [f for f in report.findings() if f.rule == rule]
    assert finding.callable == named and finding.severity is severity


def test_diffusers_custom_component_and_pipeline_code(tmp_path: Path) -> None:
    folder = _diffusers_folder(tmp_path / "sd", {"unet": ["my_unet", "MyUNet"]})
    (folder / "unet" / "my_unet.py").write_text("import os\nos.system('true')\nclass MyUNet: pass\n")
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = ["pipeline_x", "MyPipeline"]
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "pipeline_x.py").write_text("class MyPipeline: pass\n")
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    index_findings = {
        (f.rule, f.callable) for f in report.findings() if Path(f.location.path).name == "model_index.json"
    }
    assert index_findings >= {
        ("hf.remote-code", "my_unet.MyUNet"),
        ("hf.remote-code", "pipeline_x.MyPipeline"),
    }
    assert {f.callable for f in report.findings() if f.severity is Severity.MALICIOUS} == {"os.system"}


def test_sentence_transformers_and_peft_module_names(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))  # fmt: skip
    assert airlock.scan(folder).verdict is Verdict.CLEAN
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2", "type": "evil_pkg.layers.Grab"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "auto_mapping": {"base_model_class": "X", "parent_library": "os"}})
    )
    report = airlock.scan(folder)
    assert report.verdict is Verdict.SUSPICIOUS
    assert {f.callable for f in report.findings() if f.rule == "hf.dynamic-module"} == {
        "evil_pkg.layers.Grab", "os.X"
    }  # fmt: skip


@pytest.mark.parametrize(
    "source",
    [
        "from os import system as s\ns('true')\n",
        "import subprocess as sp\nsp.run(['true'])\n",
        "import os\ndef f(a=os.system('true')):\n    pass\n",
        "import os\n@os.system\ndef f():\n    pass\n",
        "class M:\n    import os\n    os.popen('true')\n",
    ],
)
def test_import_time_code_is_found_through_aliases_decorators_and_defaults(
    hf_folder: Path, tmp_path: Path, source: str
) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    (folder / "modeling_x.py").write_text(source)
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)


def test_allow_names_remote_code_and_dynamic_modules(
    hf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airlock._cli import main

    folder = _copy(hf_folder, tmp_path / "f")
    _with_remote_code(folder, "import torch\n\nclass TinyModel(torch.nn.Module):\n    pass\n")
    (folder / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "", "type": "evil_pkg.Grab"}])
    )
    base = ["scan", str(folder)]
    assert main(base) == 3
    allow = ["--allow", "modeling_tiny.TinyModel", "--allow", "configuration_tiny.TinyConfig"]
    assert main([*base, *allow]) == 3  # evil_pkg.Grab still unknown
    assert main([*base, *allow, "--allow", "evil_pkg.Grab"]) == 0
    assert main([*base, "--allow", "modeling_tiny.TinyModel", "--allow", "evil_pkg.Grab"]) == 3  # near miss
    # an allowance never clears code that runs a command on import
    (folder / "modeling_tiny.py").write_text("import os\nos.system('true')\nclass TinyModel: pass\n")
    assert main([*base, *allow, "--allow", "evil_pkg.Grab"]) == 1
    capsys.readouterr()


def test_custom_generate_code_in_a_subfolder_is_analysed(hf_folder: Path, tmp_path: Path) -> None:
    """transformers' from_pretrained(trust_remote_code=True) imports custom_generate/generate.py."""
    folder = _copy(hf_folder, tmp_path / "f")
    marker = tmp_path / "pwned"
    (folder / "custom_generate").mkdir()
    (folder / "custom_generate" / "generate.py").write_text(
        f"import os\nos.system('touch {marker}')\n\ndef generate(model, *args, **kwargs):\n    pass\n"
    )
    code = (
        "import sys\nfrom transformers import AutoModelForCausalLM\n"
        "AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, timeout=180, check=False,
                   env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert marker.exists(), "the fixture does not run its payload in from_pretrained"
    marker.unlink()
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    (finding,) = [f for f in report.findings() if f.severity is Severity.MALICIOUS]
    assert finding.location.path.endswith("custom_generate/generate.py") and finding.callable == "os.system"


# Outside review 17: a primitive *referenced* (not called by name) at import time, or called from
# the file's own function/class that import-time code names, ran under trust_remote_code and was
# only SUSPICIOUS. ``{cmd}`` is the payload command; each form is proven with transformers.
_REVIEW17_FORMS = {
    "assigned": ("import os\nf = os.system\nf({cmd!r})\n", "os.system"),
    "mapped": ("import os\nlist(map(os.system, [{cmd!r}]))\n", "os.system"),
    "getattr": ("import os\ngetattr(os, 'system')({cmd!r})\n", "os.system"),
    "dunder-call": ("import os\nos.system.__call__({cmd!r})\n", "os.system"),
    "re-exported": ("import os.path as p\np.os.system({cmd!r})\n", "os.system"),
    "sys-modules": ("import sys\nsys.modules['os'].system({cmd!r})\n", "sys.modules"),
    "own-function": ("import os\ndef f():\n    os.system({cmd!r})\nf()\n", "os.system"),
    "init-subclass": (
        "import os\nclass A:\n    def __init_subclass__(cls):\n        os.system({cmd!r})\nclass B(A):\n    pass\n",
        "os.system",
    ),
    "lambda": ("import os\n(lambda: os.system({cmd!r}))()\n", "os.system"),
    "globals-builtins": (
        "globals()['__builtins__']['exec']('import os; os.system(%r)' % {cmd!r})\n",
        "globals",
    ),
    "star-import": ("from os import *\nsystem({cmd!r})\n", "os.system"),
    "other-subprocess": (
        "import subprocess\nsubprocess.getstatusoutput({cmd!r})\n",
        "subprocess.getstatusoutput",
    ),
}


@pytest.mark.parametrize("form", sorted(_REVIEW17_FORMS))
def test_review17_import_time_primitive_reached_indirectly_is_malicious(
    hf_folder: Path, tmp_path: Path, form: str
) -> None:
    template, callable_ = _REVIEW17_FORMS[form]
    folder = _copy(hf_folder, tmp_path / "f")
    marker = tmp_path / "pwned"
    _with_remote_code(folder, template.format(cmd=f"mkdir {marker}") + "\nclass TinyModel:\n    pass\n")
    code = (
        "import sys\nfrom transformers.dynamic_module_utils import get_class_from_dynamic_module\n"
        "get_class_from_dynamic_module('modeling_tiny.TinyModel', sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, timeout=120, check=False,
                   env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert marker.is_dir(), "the fixture does not run its payload under trust_remote_code"
    marker.rmdir()
    report = airlock.scan(folder)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    hits = [f for f in report.findings() if f.severity is Severity.MALICIOUS]
    assert {f.callable for f in hits} == {callable_}
    assert {Path(f.path).name for f in report.files if f.verdict is Verdict.MALICIOUS} == {"modeling_tiny.py"}
    assert not marker.exists()


@pytest.mark.parametrize(
    "source",
    [
        # near misses: ordinary modeling code, also code that names a primitive only where it
        # does not run on import (a method nobody calls, a string, a local variable named os)
        "import torch\nclass M:\n    def __init__(self, c):\n        self.dtype = getattr(torch, c.dtype)\nM\n",
        "import os\nROOT = os.path.join(os.path.dirname(__file__), 'x')\nENV = os.environ.get('X')\n",
        "import re, torch\nPAT = re.compile('a+')\nclass M(torch.nn.Module):\n"
        "    def load(self, p):\n        return torch.load(p)\n    def run(self):\n        import os\n"
        "        os.system('true')\nM().eval()\n",
        "DOC = 'os.system(\"x\") and subprocess.run'\ncode = 3\nsocket = code + 1\n",
        "import torch\ndef f(x):\n    return torch.relu(x)\nACT = {'relu': f}\n",
        # lazy-module code reads/replaces the module's own entry; vars(obj) is an object's attributes
        "import sys\nsys.modules[__name__] = object()\nF = globals()['__file__']\nV = vars(object)\n",
    ],
)
def test_review17_ordinary_import_time_code_is_not_malicious(
    hf_folder: Path, tmp_path: Path, source: str
) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    (folder / "modeling_x.py").write_text(source)
    report = airlock.scan(folder)
    assert report.verdict is Verdict.SUSPICIOUS, render_text(report)


def test_review17_long_attribute_chains_are_analysed_in_linear_time(hf_folder: Path, tmp_path: Path) -> None:
    """Names are judged in windows of at most a few parts: 300 chains of 900 attributes (the
    parser's limit is near 1000) take well under a second, not the minutes a cubic judge needs."""
    import time

    folder = _copy(hf_folder, tmp_path / "f")
    lines = [f"x{i} = os{'.a' * 900}\ny{i} = f(){'.a' * 900}" for i in range(300)]
    (folder / "modeling_x.py").write_text("import os\n" + "\n".join(lines) + "\n")
    started = time.monotonic()
    report = airlock.scan(folder)
    assert time.monotonic() - started < 30
    assert report.verdict is Verdict.SUSPICIOUS, render_text(report)


@pytest.mark.parametrize(
    ("source", "callable_"),
    [
        (
            "import importlib.util as u\ns = u.spec_from_file_location('m', 'x.so')\n",
            "importlib.util.spec_from_file_location",
        ),
        (
            "from importlib.machinery import ExtensionFileLoader as E\nE('m', 'x.so')\n",
            "importlib.machinery.ExtensionFileLoader",
        ),
        ("vars()['o' + 's']\n", "vars"),
        ("import os\nm = os\n", "os"),
    ],
)
def test_review17_loaders_of_files_and_module_values(
    hf_folder: Path, tmp_path: Path, source: str, callable_: str
) -> None:
    folder = _copy(hf_folder, tmp_path / "f")
    (folder / "modeling_x.py").write_text(
        source + "import importlib.util\nOK = importlib.util.find_spec('x') is None\n"
    )
    report = airlock.scan(folder)
    assert {f.callable for f in report.findings() if f.severity is Severity.MALICIOUS} == {callable_}
